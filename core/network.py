"""The one network probe: can a server be reached within a few seconds, DNS lookup included."""

import socket
import threading
import urllib.error
import urllib.request
from urllib.parse import urlparse


def unreachable(url, timeout=3.0, http=False):
    """None when url's host takes a TCP connection within timeout seconds (http=True: answers a HEAD request
    for url with a success, since some networks answer every address with an error page), else what went
    wrong in a few words. The attempt runs in a thread we stop waiting for, because a socket's timeout does
    not bound the DNS lookup; the clients we probe for (the hub, wandb) would retry for half a minute or more."""
    answer, silent = [], f"no answer within {timeout:g} s"

    def probe():
        try:
            if http:
                urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=timeout)
            else:
                u = urlparse(url)
                socket.create_connection((u.hostname, u.port or (443 if u.scheme == 'https' else 80)), timeout).close()
            answer.append(None)
        except urllib.error.HTTPError as e:
            answer.append(f"HTTP {e.code} from {url}")
        except Exception as e:  # OSError, URLError, a malformed url: each a reason, never a traceback
            reason = getattr(e, 'reason', None) or getattr(e, 'strerror', None) or e
            # the socket's own timeout, when it fires before the wait below ends, says what the wait would
            answer.append(silent if isinstance(reason, TimeoutError) else str(reason) or type(e).__name__)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return answer[0] if answer else silent
