#!/usr/bin/env python3
"""Independent reference for the computed vectors (hash, codes, ids, templates, segments, time).

Expected values in hash.json, codes.json, ids.json, templates.json come from this file, written
from SPEC.md alone in a second language, so the Rust core is never checked against itself.
Hand-written vectors (envelopes, validation, verify/guard traces) are not touched.

    python3 tests/vectors/reference.py          # rewrite the computed files
    python3 tests/vectors/reference.py --check  # fail if they differ from what is committed
"""
import base64, datetime, hashlib, hmac, json, math, os, re, struct, sys, unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))

def f(x: bytes) -> bytes:
    return struct.pack(">I", len(x)) + x

def code_hash(pepper, ws, sid, purpose, code):
    msg = b"otpkit/v1" + f(ws.encode()) + f(sid.encode()) + f(purpose.encode()) + f(code.encode())
    return hmac.new(pepper.encode(), msg, hashlib.sha256).hexdigest()

def canonical_amount(a: str) -> str:
    """SPEC §7: a decimal string (<= 18 digits, <= 4 after the point) compared as a decimal."""
    assert re.fullmatch(r"[0-9]+(\.[0-9]{1,4})?", a) and len(a.replace(".", "")) <= 18, a
    whole, _, frac = a.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    return whole + ("." + frac if frac else "")

def code_hash_v2(pepper, ws, sid, purpose, code, amount, currency, payee):
    """PSD2 dynamic linking: 'otpkit/v2' framing with the payment (amount canonical)."""
    msg = (b"otpkit/v2" + f(ws.encode()) + f(sid.encode()) + f(purpose.encode()) + f(code.encode())
           + f(canonical_amount(amount).encode()) + f(currency.encode()) + f(payee.encode()))
    return hmac.new(pepper.encode(), msg, hashlib.sha256).hexdigest()

def digits(seed: bytes, n: int) -> str:
    out, stream, counter = [], list(seed), 0
    while len(out) < n:
        if not stream:
            stream = list(hashlib.sha256(b"otpkit/v1/digits" + seed + struct.pack(">I", counter)).digest())
            counter += 1
        b = stream.pop(0)
        if b < 250:
            out.append(str(b % 10))
    return "".join(out)

def uuid_v4(b: bytes) -> str:
    b = bytearray(b)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

def api_key(random: bytes):
    key = "otpk_" + base64.urlsafe_b64encode(random).decode().rstrip("=")
    key_id = "key_" + hashlib.sha256(b"otpkit/v1/key-id:" + key.encode()).digest()[:8].hex()
    return key, key_id, hashlib.sha256(key.encode()).hexdigest()

GSM_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
             "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXT = "\f^{}\\[~]|€"

def segments(text: str):
    if all(c in GSM_BASIC or c in GSM_EXT for c in text):
        units = sum(2 if c in GSM_EXT else 1 for c in text)
        enc, single, multi = "gsm7", 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        enc, single, multi = "ucs2", 70, 67
    segs = 0 if units == 0 else 1 if units <= single else math.ceil(units / multi)
    return enc, units, segs

# Characters a template must not carry to a phone (SECURITY.md, input validation): C0 controls but
# the newline, DEL and C1, bidi marks/embeddings/overrides/isolates, zero-width and other invisible
# format characters, the Unicode line and paragraph separators.
HIDDEN = (set(range(0x00, 0x20)) - {0x0A}) | set(range(0x7F, 0xA0)) | {0x061C, 0x180E, 0xFEFF} \
    | set(range(0x200B, 0x2010)) | set(range(0x2028, 0x202F)) | set(range(0x2060, 0x2070)) | set(range(0xFFF9, 0xFFFC))
SEPARATORS = " \u00a0\u2007\u202f-."

def template_ok(template):
    """The template checks: no hidden character, {code} exactly once, no digit touching {code},
    no other run of 4+ digits (any Unicode number; {minutes} counts 2; one separator between
    digits continues a run)."""
    if any(ord(c) in HIDDEN for c in template) or template.count("{code}") != 1:
        return False
    marks, i = [], 0
    while i < len(template):
        for k, m in (("{code}", "C"), ("{minutes}", "dd"), ("{app}", "x"), ("{purpose}", "x")):
            if template.startswith(k, i):
                marks.append(m); i += len(k); break
        else:
            c = template[i]; i += 1
            marks.append("d" if unicodedata.category(c).startswith("N") else "s" if c in SEPARATORS else "x")
    m = "".join(marks)
    if re.search("dC|Cd", m):
        return False
    return all(run.count("d") <= 3 for run in re.findall("d(?:s?d)*", m))

def render(template, code, ttl, app, purpose):
    if not template_ok(template):
        return None
    out, i = [], 0
    subs = {"{code}": code, "{minutes}": str(math.ceil(ttl / 60)), "{app}": app or "", "{purpose}": purpose}
    while i < len(template):
        for k, v in subs.items():
            if template.startswith(k, i):
                out.append(v); i += len(k); break
        else:
            out.append(template[i]); i += 1
    return "".join(out)

def rfc3339(ms):
    dt = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"

def mask(dest):
    d = dest[1:]
    return "+" + "".join(c if i < 3 or i >= len(d) - 4 else "*" for i, c in enumerate(d))

def seeded(label: str, n: int) -> bytes:
    """Deterministic 'random' bytes for vectors (not for production)."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{i}".encode()).digest(); i += 1
    return out[:n]

def build():
    peppers = ["0123456789abcdef0123456789abcdef", "pepper-with-ünïcode-and-more-than-32-bytes!!", "x" * 64]
    hashes = []
    cases = [
        (0, "ws_1", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "LOGIN", "123456"),
        (0, "ws_1", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "LOGIN", "123457"),
        (0, "ws_2", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "LOGIN", "123456"),
        (0, "ws_1", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "TRANSACTION", "123456"),
        (1, "ws_1", "00000000-0000-4000-8000-000000000000", "KYC_VERIFICATION", "0000000000"),
        (2, "a" * 64, "ffffffff-ffff-4fff-bfff-ffffffffffff", "PASSWORD_RESET", "987654"),
        (0, "ab", "c", "LOGIN", "1234"),
        (0, "a", "bc", "LOGIN", "1234"),
        (1, "ws_x", "5f0c2a1e-8c3b-4d2e-9f1a-0b1c2d3e4f50", "ACCOUNT_RECOVERY", "31415926"),
        (2, "ws-under_score", "5f0c2a1e-8c3b-4d2e-9f1a-0b1c2d3e4f50", "DEVICE_VERIFICATION", "271828"),
        (0, "ws_1", "5f0c2a1e-8c3b-4d2e-9f1a-0b1c2d3e4f50", "EMAIL_VERIFICATION", "000000"),
    ]
    for p, ws, sid, purpose, code in cases:
        hashes.append({"pepper": peppers[p], "workspaceId": ws, "sessionId": sid, "purpose": purpose,
                       "code": code, "hash": code_hash(peppers[p], ws, sid, purpose, code)})
    # Codes bound to a payment (v2). "10.50" and "010.5" bind the same amount; the others differ.
    tx_cases = [
        (0, "ws_1", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "123456", "10.50", "EUR", "Acme Shop"),
        (0, "ws_1", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "123456", "010.5", "EUR", "Acme Shop"),
        (0, "ws_1", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "123456", "10.51", "EUR", "Acme Shop"),
        (0, "ws_1", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "123456", "10.50", "USD", "Acme Shop"),
        (0, "ws_1", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "123456", "10.50", "EUR", "Acme Shop."),
        (1, "ws_x", "5f0c2a1e-8c3b-4d2e-9f1a-0b1c2d3e4f50", "31415926", "0", "GHS", "Ünïcode Pâyee"),
        (2, "ws_x", "5f0c2a1e-8c3b-4d2e-9f1a-0b1c2d3e4f50", "271828", "123456789012345678", "JPY", "x" * 64),
        (0, "ws_1", "feab6011-2469-4804-ace5-ee9dcb5b9ef2", "123456", "3.0000", "EUR", "A"),
    ]
    for p, ws, sid, code, amount, currency, payee in tx_cases:
        hashes.append({"pepper": peppers[p], "workspaceId": ws, "sessionId": sid, "purpose": "TRANSACTION",
                       "code": code, "amount": amount, "currency": currency, "payee": payee,
                       "hash": code_hash_v2(peppers[p], ws, sid, "TRANSACTION", code, amount, currency, payee)})

    codes = []
    for label, n in [("a", 6), ("b", 6), ("c", 8), ("d", 10), ("e", 7), ("f", 9)]:
        seed = seeded("codes/" + label, 32)
        codes.append({"seed": seed.hex(), "length": n, "code": digits(seed, n)})
    # Rejections at the start, and a seed that is rejected whole (the SHA-256 extension path).
    seed = bytes([250, 251, 255, 3, 249, 0]) + seeded("codes/g", 26)
    codes.append({"seed": seed.hex(), "length": 6, "code": digits(seed, 6)})
    seed = bytes([0xFF] * 32)
    codes.append({"seed": seed.hex(), "length": 10, "code": digits(seed, 10)})
    seed = bytes([252] * 28 + [1, 2, 3, 4])
    codes.append({"seed": seed.hex(), "length": 6, "code": digits(seed, 6)})

    ids = {"uuids": [], "apiKeys": [], "masks": [], "times": []}
    for label in ["u1", "u2", "u3"]:
        b = seeded("uuid/" + label, 16)
        ids["uuids"].append({"bytes": b.hex(), "uuid": uuid_v4(b)})
    ids["uuids"].append({"bytes": "00" * 16, "uuid": uuid_v4(bytes(16))})
    for label in ["k1", "k2"]:
        b = seeded("apikey/" + label, 32)
        key, key_id, key_hash = api_key(b)
        ids["apiKeys"].append({"bytes": b.hex(), "apiKey": key, "keyId": key_id, "keyHash": key_hash})
    for d in ["+233202007745", "+12025550123", "+12345678", "+447700900123456"]:
        ids["masks"].append({"dest": d, "masked": mask(d)})
    for ms in [0, 1700000000123, 951782400000, 1798675200000, 4102444799999]:
        ids["times"].append({"millis": ms, "rfc3339": rfc3339(ms), "date": rfc3339(ms)[:10]})

    default = "{code} is your verification code. It expires in {minutes} minutes."
    tcases = [
        (default, "123456", 300, None, "LOGIN"),
        (default, "1234567890", 61, None, "LOGIN"),
        ("{app}: {code} for {purpose}", "482913", 600, "Acme Pay", "TRANSACTION"),
        ("{app}{code}", "482913", 60, None, "LOGIN"),
        ("Votre code {code} expire dans {minutes} min. Ne le partagez pas.", "000111", 120, None, "LOGIN"),
        ("Ваш код: {code}", "555666", 300, None, "LOGIN"),
        ("Code {code} {unknown} {x} { {} €", "123123", 300, None, "LOGIN"),
        ("{code} " + "a" * 153, "123456", 300, None, "LOGIN"),
        ("{code} " + "a" * 452, "123456", 300, None, "LOGIN"),
        ("{code} " + "a" * 453, "123456", 300, None, "LOGIN"),
        ("{code} " + "😀" * 30, "123456", 300, None, "LOGIN"),
        ("{code} " + "[" * 76, "123456", 300, None, "LOGIN"),
        ("no placeholder", "123456", 300, None, "LOGIN"),
        ("{code}{code}", "123456", 300, None, "LOGIN"),
        ("{Code} is not {code}", "123456", 300, None, "LOGIN"),
        ("{code} " + "á" * 194, "123456", 300, None, "LOGIN"),
        # Hidden characters and decoy digits (issue 19, item 7).
        ("Code {code}\u0007\u001b[31m\r\nFake: 000000", "387653", 300, None, "LOGIN"),
        ("Code {code}\r\n", "123456", 300, None, "LOGIN"),
        ("Code {code}\nDo not share it.", "123456", 300, None, "LOGIN"),
        ("\u202e{code} edoc ruoY", "123456", 300, None, "LOGIN"),
        ("Co\u200bde {code}", "123456", 300, None, "LOGIN"),
        ("Code {code}\u0085", "123456", 300, None, "LOGIN"),
        ("Code {code}. Old code: 000000", "123456", 300, None, "LOGIN"),
        ("{code} or 123 456", "123456", 300, None, "LOGIN"),
        ("{code} or 12-34", "123456", 300, None, "LOGIN"),
        ("{code} ١٢٣٤", "123456", 300, None, "LOGIN"),
        ("{code}{minutes}", "123456", 300, None, "LOGIN"),
        ("0{code}", "123456", 300, None, "LOGIN"),
        ("{code} {minutes}{minutes}", "123456", 300, None, "LOGIN"),
        ("Call 112 if not you: {code}. Valid {minutes} min.", "123456", 300, None, "LOGIN"),
        ("{code} 12, 34 or 12  34", "123456", 300, None, "LOGIN"),
        ("{app}: {code}", "123456", 300, "Shop 2024", "LOGIN"),
    ]
    templates = []
    for t, code, ttl, app, purpose in tcases:
        text = render(t, code, ttl, app, purpose)
        case = {"template": t, "code": code, "ttlSeconds": ttl, "app": app, "purpose": purpose}
        if text is None:
            case["error"] = {"code": "VALIDATION_ERROR", "field": "messageTemplate"}
        else:
            enc, units, segs = segments(text)
            if segs > 3:
                case["error"] = {"code": "VALIDATION_ERROR", "field": "messageTemplate"}
            else:
                case["text"] = text
                case["segments"] = {"encoding": enc, "units": units, "segments": segs}
        templates.append(case)
    return {"hash.json": {"about": "code_hash = HMAC-SHA256(pepper, 'otpkit/v1' || f(ws) || f(id) || f(purpose) || f(code)); f(x) = u32be(len) || x. Cases with amount/currency/payee (PSD2): 'otpkit/v2' || f(ws) || f(id) || f(purpose) || f(code) || f(canonical amount) || f(currency) || f(payee), the amount without leading zeros, trailing decimal zeros or a bare point",
                          "cases": hashes},
            "codes.json": {"about": "digits from 32 seed bytes: byte < 250 gives byte % 10, else skipped; then SHA-256('otpkit/v1/digits' || seed || u32be(counter)) blocks",
                           "cases": codes},
            "ids.json": {"about": "uuid v4 from 16 bytes, API keys from 32 bytes, destination masking, RFC 3339", **ids},
            "templates.json": {"about": "template rendering and SMS segments (GSM-7 160/153 with extension chars = 2, else UCS-2 70/67); > 3 segments, {code} not exactly once, a control/bidi/zero-width character (newline allowed), a digit touching {code} or another run of 4+ digits is a 400 on messageTemplate",
                               "cases": templates}}

def main():
    check = "--check" in sys.argv
    bad = 0
    for name, value in build().items():
        text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
        path = os.path.join(HERE, name)
        if check:
            with open(path, encoding="utf-8") as fh:
                if fh.read() != text:
                    print(f"{name}: differs from the reference", file=sys.stderr); bad += 1
        else:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            print(f"wrote {name}")
    sys.exit(1 if bad else 0)

if __name__ == "__main__":
    main()
