"""The failures a user can cause, each with the HTTP status the API answers it with."""

from __future__ import annotations


class ReviewscoreError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadUploadError(ReviewscoreError):
    """The uploaded file cannot be read as the CSV we need (or not past some point)."""

    status_code = 422

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


class UploadTooLargeError(BadUploadError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=413)


class UnsupportedMediaError(BadUploadError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=415)


class UploadInterruptedError(ReviewscoreError):
    """The client went away before the upload ended."""

    status_code = 400


class JobNotFoundError(ReviewscoreError):
    status_code = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")


class JobStateError(ReviewscoreError):
    """The job is not in a state that allows the request (cancel a finished job, say)."""

    status_code = 409


class BadRequestError(ReviewscoreError):
    status_code = 422


class URLRefusedError(ReviewscoreError):
    """A URL given to the service is outside REVIEWSCORE_URL_ALLOW, or its host is private."""

    status_code = 422


class SourceFetchError(ReviewscoreError):
    """A source_url could not be fetched: its server answered an error (422: the URL is wrong
    or expired), or failed or went away past the retries (502)."""

    def __init__(self, message: str, status_code: int = 502) -> None:
        super().__init__(message)
        self.status_code = status_code


class ServiceUnavailableError(ReviewscoreError):
    status_code = 503


class DatabaseUnavailableError(ServiceUnavailableError):
    """The database cannot be reached: restarting, or cut off from this host."""


class ScoringTimeoutError(ReviewscoreError):
    status_code = 504


class ScoringFailedError(ReviewscoreError):
    """A worker took the reviews but its model call raised: a fault on our side."""

    status_code = 500


class QuotaExceededError(ReviewscoreError):
    """A key is at one of its quotas (core/quotas.py): answered 429 with Retry-After."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
