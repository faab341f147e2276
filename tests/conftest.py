import os

from hypothesis import HealthCheck, settings

# CI: a fixed seed and a bounded number of examples. `HYPOTHESIS_PROFILE=long pytest` for more.
settings.register_profile("ci", max_examples=30, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
