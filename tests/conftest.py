import backprop


def pytest_report_header(config):
    return f"backprop {backprop.__version__} from {backprop.__path__[0]}"
