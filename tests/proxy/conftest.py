"""Fixtures of the proxy tests: the shipped pipeline and classifier, loaded once."""

import pytest


@pytest.fixture(scope="session")
def proxy_pipe_shared():
    """The shipped proxy pipeline (float32, CPU); tests must not modify it."""
    from quant.models import load_fp_pipeline

    return load_fp_pipeline("proxy", device="cpu")


@pytest.fixture(scope="session")
def proxy_classifier():
    from quant.proxy.classifier import AttributeClassifier
    from quant.proxy.model import classifier_file

    return AttributeClassifier.load(classifier_file())
