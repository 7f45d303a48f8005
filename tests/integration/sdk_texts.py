"""The payload texts the SDK payload scripts send (sdk_payloads_*.py), imported by them
and by test_sidecar_payloads.py: plain data, no SDK and no durable import."""

TEXTS = {
    "not-json": "foobaz",
    "empty": "",
    "null": "null",
    "json": '{"a": [1, "b"]}',
    "padded": ' "x" ',
    "looks-wrapped": '{"$durable.text":"x"}',
    "unicode": "\u2028\U0001f600 é \\u0000",
    "large": "large " + "\u00e9\U0001f600x" * 40_000,  # ~360 kB, its history under 4 MiB
}
