"""Where generated avatars are stored and the URLs devices fetch them from.

- :mod:`server.media.base`: the :class:`MediaStore` protocol, key rules, content-addressed
  keys and ETag helpers.
- :mod:`server.media.local`: ``LocalMediaStore`` (a directory) and ``media_route`` (serves it
  at ``/media``): the embedded default.
- :mod:`server.media.s3`: ``S3MediaStore`` (a bucket, through aioboto3): production.
"""

from server.media.base import IMMUTABLE, MediaStore, check_key, content_key

__all__ = ["IMMUTABLE", "MediaStore", "check_key", "content_key"]
