"""Vehicle registration plates are personal data (they identify a car's keeper): issue 9."""

from __future__ import annotations

import pytest

from continuum_mcp.privacy.generalize import normalize_statement
from continuum_mcp.privacy.scrub import PLACEHOLDER_RE, Scrubber


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    return Scrubber()


@pytest.mark.parametrize(
    ("text", "plate"),
    [
        ("My car is the blue Golf, AB12 CDE, parked on level 2.", "AB12 CDE"),
        ("Booked the MOT for AB12CDE next week.", "AB12CDE"),
        ("Dad still drives the old Rover, A123 BCD.", "A123 BCD"),
        ("The rental in Lyon was AB-123-CD, a grey Clio.", "AB-123-CD"),
        ("Got a parking ticket for B-MW 1234 in Berlin.", "B-MW 1234"),
        ("The company van has the number plate M AB 1234.", "M AB 1234"),
        ("My licence plate is 7ABC123 if security asks.", "7ABC123"),
        ("Her registration number is ABC-1234, a white Civic.", "ABC-1234"),
        ("Remember the reg: KX65 ZTW for the car park form.", "KX65 ZTW"),
        ("The license plate number is 8XYZ 921.", "8XYZ 921"),
    ],
)
def test_plates_are_scrubbed(scrubber: Scrubber, text: str, plate: str) -> None:
    result = scrubber.scrub(text)
    assert "<VEHICLE_PLATE>" in result.text
    assert plate not in result.text
    for token in plate.replace("-", " ").split():
        if any(c.isdigit() for c in token):
            assert token not in result.text
    span = next(s for s in result.spans if s.type == "VEHICLE_PLATE")
    assert text[span.start:span.end] == plate


def test_plate_context_does_not_swallow_the_next_words(scrubber: Scrubber) -> None:
    out = scrubber.scrub("The plate is AB12 CDE and it is red.").text
    assert out == "The plate is <VEHICLE_PLATE> and it is red."


@pytest.mark.parametrize(
    "text",
    [
        "Got my COVID 19 booster on the way home.",
        "We are certified to ISO 9001 since last year.",
        "Converted the lecture to MP3 for the commute.",
        "Print it on A4 paper, double sided.",
        "Bought a USB-C 100 W charger.",
        "The file must be saved as UTF-8 text.",
        "Use SHA-256 and a 4K monitor for the review.",
        "The plate was cold and the registration opens in June.",
    ],
)
def test_ordinary_codes_are_not_plates(scrubber: Scrubber, text: str) -> None:
    result = scrubber.scrub(text)
    assert "<VEHICLE_PLATE>" not in result.text
    for keep in ("COVID", "ISO", "MP3", "A4 paper", "USB-C", "UTF", "SHA", "plate was cold"):
        if keep in text:
            assert keep in result.text


def test_plate_placeholder_is_a_placeholder_everywhere(scrubber: Scrubber) -> None:
    out = scrubber.scrub("My car AB12 CDE is in the garage.").text
    assert PLACEHOLDER_RE.fullmatch("<VEHICLE_PLATE>")
    assert scrubber.scrub(out).text == out  # idempotent: never rescrubbed
    assert "<VEHICLE_PLATE>" in normalize_statement(out)
