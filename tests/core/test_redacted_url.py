"""URLs quoted in logs and errors keep their host and lose their user info."""

import pytest

from foreshock.config import redacted_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://alertmanager:9093", "http://alertmanager:9093"),
        ("https://admin:s3cret@am.example:9093/x", "https://***@am.example:9093/x"),
        ("https://t0ken@am.example", "https://***@am.example"),
        ("ftp://user:pw@host", "ftp://***@host"),
        # No scheme: a URL parser would take `admin` for one.
        ("admin:AMPASSWORD42@host", "***@host"),
        ("admin:AMPASSWORD42@host/api", "***@host/api"),
        # An @ after the host belongs to the path or query, not to a user.
        ("http://host/a@b?to=c@d", "http://host/a@b?to=c@d"),
        (None, None),
    ],
)
def test_user_info_is_masked_and_the_rest_kept(url: str | None, shown: str) -> None:
    assert redacted_url(url) == shown
