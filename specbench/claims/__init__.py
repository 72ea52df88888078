"""Published claims about speculative decoding, as data, and the verdicts specbench gives them."""

from specbench.claims.registry import METRICS, SHIPPED_CLAIMS_DIR, Claim, load_claims, load_claims_file
from specbench.claims.verdicts import (
    INCONCLUSIVE,
    NOT_APPLICABLE,
    NOT_REPRODUCED,
    REPRODUCED,
    VERDICTS,
    Verdict,
    evaluate_claims,
    judge,
    verdicts_frame,
)

__all__ = [
    "METRICS", "SHIPPED_CLAIMS_DIR", "Claim", "load_claims", "load_claims_file",
    "INCONCLUSIVE", "NOT_APPLICABLE", "NOT_REPRODUCED", "REPRODUCED", "VERDICTS", "Verdict",
    "evaluate_claims", "judge", "verdicts_frame",
]
