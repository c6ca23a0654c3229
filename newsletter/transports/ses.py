"""Amazon SES v2 ``SendEmail`` with raw content, signed with AWS Signature Version 4.

The raw MIME we built (DKIM signature and all) is sent as is. ``[api] api_key`` is
the access key id and ``[api] secret_key`` the secret access key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any
from urllib.parse import quote, urlsplit

from newsletter.render.mime import Message
from newsletter.transports.http_api import HttpApiTransport

SERVICE = "ses"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sigv4(method: str, url: str, body: bytes, *, region: str, access_key: str,
          secret_key: str, now: dt.datetime | None = None, service: str = SERVICE,
          ) -> dict[str, str]:
    """The headers that sign this request (AWS SigV4, no query string)."""
    now = now or dt.datetime.now(dt.UTC)
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"content-type": "application/json", "host": parts.netloc,
               "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        method, quote(parts.path or "/", safe="/-_.~"), parts.query,
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload,
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service),
                "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json", "X-Amz-Date": amz_date,
        "X-Amz-Content-Sha256": payload,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                         f"SignedHeaders={signed}, Signature={signature}",
    }


class SesTransport(HttpApiTransport):
    name = "ses"
    default_base = "https://email.{region}.amazonaws.com"
    needs = ("api_key", "secret_key")

    def request(self, messages: Sequence[Message]) -> dict[str, Any]:
        [m] = messages
        body = json.dumps({
            # the From address (a verified identity), not the envelope sender: SES
            # sets its own MAIL FROM and reports bounces through its notifications
            "FromEmailAddress": parseaddr(m.from_header)[1] or m.sender,
            "Destination": {"ToAddresses": [m.to]},
            "Content": {"Raw": {"Data": base64.b64encode(m.data).decode("ascii")}},
        }).encode()
        url = f"{self.base}/v2/email/outbound-emails"
        headers = sigv4("POST", url, body, region=self.cfg.region,
                        access_key=self.cfg.api_key or "", secret_key=self.cfg.secret_key or "")
        return {"method": "POST", "url": url, "headers": headers, "content": body}
