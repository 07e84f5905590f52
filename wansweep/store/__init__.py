"""Object stores: ``s3://bucket/prefix`` through boto3, or a local folder, behind one interface.

- :mod:`.base`    the :class:`Store` interface (whole-object writes, conditional creates)
- :mod:`.local`   a local folder
- :mod:`.s3`      S3 and S3-compatible stores: the only module that imports boto3
- :mod:`.uris`    opening a store by URI; reading inputs by URI; presigned links
- :mod:`.layout`  the archive's layout: every key wansweep writes

Credentials and endpoint come from the standard AWS configuration (``AWS_ENDPOINT_URL``,
profiles, ...), so AWS S3, MinIO, R2 and SeaweedFS all work. May import only
:mod:`wansweep.errors` and :mod:`wansweep.scrub`.
"""

from wansweep.errors import StoreError
from wansweep.store.base import Store
from wansweep.store.local import LocalStore
from wansweep.store.s3 import S3Store, s3_client
from wansweep.store.uris import open_store, presign, read_uri, s3_location

__all__ = [
    "LocalStore",
    "S3Store",
    "Store",
    "StoreError",
    "open_store",
    "presign",
    "read_uri",
    "s3_location",
    "s3_client",
]
