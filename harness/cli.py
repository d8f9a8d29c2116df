"""Small pieces the command-line scripts share."""
import argparse


def int_at_least(minimum):
    """An argparse `type` accepting integers >= minimum, with a message naming the bad value."""
    def parse(s):
        try:
            n = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {n}")
        return n
    parse.__name__ = f"int>={minimum}"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


DEVICES = ("cpu", "gpu", "cuda")   # cuda: nanoGPT's spelling of gpu


class DeviceError(Exception):
    """--device gpu asked for where cupy or a CUDA GPU is missing."""


def array_module(device):
    """numpy for --device cpu; cupy for --device gpu (or cuda), or DeviceError saying why it can't be had."""
    if device == "cpu":
        import numpy
        return numpy
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # ImportError, or a CUDA runtime error when there is no GPU/driver
        raise DeviceError(f"--device {device} needs cupy and a CUDA GPU: {type(e).__name__}: "
                          f"{' '.join(str(e).split())}") from None
    return cupy


def load_script(name):
    """scripts/<name>.py imported as a module (under a private name), so that tests can call its main(argv)
    in-process."""
    import importlib.util
    from nanoproof.spec.contract import REPO_ROOT
    spec = importlib.util.spec_from_file_location(f"nanoproof_{name}_cli", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
