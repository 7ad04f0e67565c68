import pandas as pd
import pytest


@pytest.fixture(scope="session")
def sp500() -> pd.DataFrame:
    """Real daily S&P 500 bars (1999-2018) shipped by the arch package, as a Celeris bar frame."""
    from arch.data import sp500

    raw = sp500.load()
    bars = raw[["Open", "High", "Low", "Close", "Volume"]].astype("float64")
    bars.columns = ["open", "high", "low", "close", "volume"]
    bars.index = pd.DatetimeIndex(raw.index, name="time").tz_localize("UTC")
    return bars
