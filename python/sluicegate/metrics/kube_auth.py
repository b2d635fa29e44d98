"""--metrics-endpoint-auth in Kubernetes mode, as controller-runtime's filter does it for upstream:
the scraper's bearer token is authenticated with a TokenReview, then the user must be allowed
`get` on the non-resource URL /metrics (SubjectAccessReview). Answers are cached briefly, so a
Prometheus scraping every few seconds costs the API server two calls per token and minute."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from kubernetes import client

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0


class KubeMetricsAuth:
    def __init__(self, api: client.ApiClient, path: str = "/metrics") -> None:
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)
        self._path = path
        self._cache: dict[str, tuple[float, bool]] = {}

    async def __call__(self, token: str) -> bool:
        key = hashlib.sha256(token.encode()).hexdigest()
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        try:
            allowed = await asyncio.to_thread(self._review, token)
        except client.ApiException as e:
            log.warning("--metrics-endpoint-auth: review failed (%s %s); refusing the scrape", e.status, e.reason)
            return False
        if len(self._cache) > 1000:  # tokens rotate; never grow without bound
            self._cache.clear()
        self._cache[key] = (now, allowed)
        return allowed

    def _review(self, token: str) -> bool:
        review = self._authn.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token)))
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return False
        user = status.user
        sar = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=user.username, groups=user.groups, uid=user.uid, extra=user.extra,
            non_resource_attributes=client.V1NonResourceAttributes(path=self._path, verb="get")))
        decision = self._authz.create_subject_access_review(sar).status
        return bool(decision is not None and decision.allowed)
