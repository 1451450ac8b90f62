import backprop


def pytest_report_header(config):
    from backprop._kernels import kernels_in_use

    return (
        f"backprop {backprop.__version__} from {backprop.__path__[0]}, kernels {kernels_in_use()}"
    )


try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the property tests skip themselves without hypothesis
    pass
else:
    for _name, _cases in (("default", 150), ("campaign", 25_000)):
        settings.register_profile(
            _name, max_examples=_cases, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        )
    settings.load_profile("default")
