"""The AWS backend: the only package that imports botocore, aiobotocore, aiohttp, aioboto3."""
