"""The cache: in-process LRU, Redis and the cache_entries table, read through in that order.

The only package of datalayer that imports redis.

>>> cache = get_cache_manager()                                              # doctest: +SKIP
>>> cache.cache_analysis_result("analysis_123", {"result": "data"}, ttl=3600)
>>> cache.get_cached_analysis_result("analysis_123")
{'result': 'data'}
>>> cache.cache_user_data("user_123", {"name": "John"}, ttl=1800)
>>> cache.invalidate_user_cache("user_123")
"""

from datalayer.cache._keys import Keys
from datalayer.cache.manager import CacheManager, close_cache_manager, get_cache_manager

__all__ = ["CacheManager", "Keys", "close_cache_manager", "get_cache_manager"]
