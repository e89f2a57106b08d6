"""Ordinary handler code keeps working under the policy, with exact results and logs.

Each case is (source, payload, expected value[, expected logs]); the handler is `h`. The
programs are plain Python: under CPython without the sandbox they return the same values.
"""

from __future__ import annotations

import textwrap

import pytest

from handlerbox.sandbox import CompileError, run_source


def case(case_id: str, source: str, payload: object, expected: object, logs: str = "") -> object:
    return pytest.param(textwrap.dedent(source), payload, expected, logs, id=case_id)


def body(lines: str, prelude: str = "") -> str:
    return prelude + "def h(payload):\n" + textwrap.indent(textwrap.dedent(lines), "    ")


STDLIB = [
    case("json-dumps-loads-decode-error", body("""\
        text = json.dumps({"b": 1, "a": [1, 2]}, sort_keys=True)
        try:
            json.loads("{bad")
        except json.JSONDecodeError as e:
            return [text, json.loads(text)["a"], json.loads('"\\\\u00e9"'), e.pos, e.msg]
        """, "import json\n"), {},
         ['{"a": [1, 2], "b": 1}', [1, 2], "é", 1,
          "Expecting property name enclosed in double quotes"]),
    case("from-json-import-dumps", body("return dumps(payload, separators=(',', ':'))",
                                        "from json import dumps\n"),
         {"x": [1, None]}, '{"x":[1,null]}'),
    case("math", body("return [math.sqrt(16), math.floor(-1.5), round(math.pi, 4),"
                      " math.gcd(12, 18), math.isclose(0.1 + 0.2, 0.3), math.inf > 1e308]",
                      "import math\n"), {}, [4.0, -2, 3.1416, 6, True, True]),
    case("re", body("""\
        pattern = re.compile(r"(?P<key>\\w+)=(?P<value>\\d+)", re.I)
        found = [m.groupdict() for m in pattern.finditer(payload["q"])]
        return [found, re.sub(r"(\\d+)", r"<\\1>", "a1b22"), re.split(r"[,;]\\s*", "a, b;c"),
                re.findall(r"\\d", "x1y2"), re.match(r"(a)(b)?", "ac").group(1)]
        """, "import re\n"), {"q": "a=1&B=22"},
         [[{"key": "a", "value": "1"}, {"key": "B", "value": "22"}], "a<1>b<22>",
          ["a", "b", "c"], ["1", "2"], "a"]),
    case("datetime-strftime-strptime", body("""\
        d = datetime.datetime(2024, 1, 2, 3, 4, 5)
        p = datetime.datetime.strptime("2024-05-06 07:08", "%Y-%m-%d %H:%M")
        return [d.strftime("%A %d %B %Y %H:%M:%S"), p.isoformat(), p.weekday()]
        """, "import datetime\n"), {},
         ["Tuesday 02 January 2024 03:04:05", "2024-05-06T07:08:00", 0]),
    case("datetime-from-import-timedelta", body("""\
        start = datetime(2024, 1, 31, 23, 30)
        later = start + timedelta(days=1, minutes=45)
        return [later.isoformat(), (later - start).total_seconds(),
                (later - timedelta(weeks=1)).date().isoformat(), (later - start).days]
        """, "from datetime import datetime, timedelta\n"), {},
         ["2024-02-02T00:15:00", 89100.0, "2024-01-26", 1]),
    case("datetime-timezone-utc", body("""\
        at = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)
        plus2 = datetime.timezone(datetime.timedelta(hours=2))
        parsed = datetime.datetime.fromisoformat("2024-03-01T14:00:00+02:00")
        return [at.isoformat(), at.astimezone(plus2).isoformat(), parsed == at,
                datetime.date(2024, 2, 28).toordinal() - datetime.date(2024, 1, 1).toordinal()]
        """, "import datetime\n"), {},
         ["2024-03-01T12:00:00+00:00", "2024-03-01T14:00:00+02:00", True, 58]),
    case("time-gmtime-strftime", body("return [time.strftime('%Y-%m-%d', time.gmtime(86400)),"
                                      " time.gmtime(0).tm_year]", "import time\n"), {},
         ["1970-01-02", 1970]),
    case("collections", body("""\
        c = Counter("abracadabra")
        od = OrderedDict([("b", 1), ("a", 2)])
        od.move_to_end("b")
        dd = defaultdict(list)
        for word in ["apple", "avocado", "banana"]:
            dd[word[0]].append(word)
        dq = deque([1, 2, 3], maxlen=3)
        dq.appendleft(0)
        dq.rotate(1)
        return [c.most_common(2), list(od), dict(dd), list(dq), c["z"]]
        """, "from collections import Counter, OrderedDict, defaultdict, deque\n"), {},
         [[["a", 5], ["b", 2]], ["a", "b"], {"a": ["apple", "avocado"], "b": ["banana"]},
          [2, 0, 1], 0]),
    case("itertools", body("""\
        return [list(itertools.combinations([1, 2, 3], 2)),
                list(itertools.accumulate([1, 2, 3, 4])),
                [[k, len(list(g))] for k, g in itertools.groupby("aaabcc")],
                list(itertools.islice(itertools.count(10, 5), 3)),
                list(itertools.chain([1], (2, 3))), list(itertools.product("ab", repeat=2)),
                list(itertools.pairwise([1, 2, 3])), list(itertools.zip_longest([1], [2, 3]))]
        """, "import itertools\n"), {},
         [[[1, 2], [1, 3], [2, 3]], [1, 3, 6, 10], [["a", 3], ["b", 1], ["c", 2]],
          [10, 15, 20], [1, 2, 3], [["a", "a"], ["a", "b"], ["b", "a"], ["b", "b"]],
          [[1, 2], [2, 3]], [[1, 2], [None, 3]]]),
    case("decimal", body("""\
        D = decimal.Decimal
        total = D("0.1") + D("0.2")
        return [str(total), str(D("2.675").quantize(D("0.01"), rounding=decimal.ROUND_HALF_UP)),
                str(D(10) / D(4)), total == D("0.3")]
        """, "import decimal\n"), {}, ["0.3", "2.68", "2.5", True]),
    case("random-seeded-determinism", body("""\
        r = random.Random(42)
        first = [r.random(), r.randint(1, 100), r.choice("abcdef")]
        items = list(range(10))
        random.Random(42).shuffle(items)
        return [first, items, random.Random("seed").sample(range(100), 3),
                0 <= random.random() < 1, random.randint(1, 1)]
        """, "import random\n"), {},
         [[0.6394267984578837, 4, "f"], [7, 3, 2, 8, 5, 6, 9, 4, 0, 1], [17, 7, 30], True, 1]),
    case("uuid", body("""\
        u = uuid.uuid5(uuid.NAMESPACE_DNS, "python.org")
        return [str(u), u.version, str(uuid.uuid3(uuid.NAMESPACE_URL, "https://example.com")),
                len(uuid.uuid4().hex), str(uuid.UUID(int=1))]
        """, "import uuid\n"), {},
         ["886313e1-3b8a-5372-9b90-0c9aee199e5d", 5, "68794df6-5e20-385f-ab08-bb73f8a433cb",
          32, "00000000-0000-0000-0000-000000000001"]),
    case("base64", body("""\
        return [base64.b64encode(b"hello world").decode(), base64.b64decode("aGk=").decode(),
                base64.urlsafe_b64encode(bytes([251, 255])).decode(),
                base64.b16encode(b"hi").decode(), base64.b32encode(b"hi").decode()]
        """, "import base64\n"), {}, ["aGVsbG8gd29ybGQ=", "hi", "-_8=", "6869", "NBUQ===="]),
    case("hashlib-hmac", body("""\
        mac = hmac.new(b"key", b"The quick brown fox jumps over the lazy dog", "sha256")
        return [hashlib.sha256(b"abc").hexdigest(), hashlib.md5(b"").hexdigest(),
                mac.hexdigest(), hmac.compare_digest("a", "a")]
        """, "import hashlib\nimport hmac\n"), {},
         ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
          "d41d8cd98f00b204e9800998ecf8427e",
          "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8", True]),
    case("statistics", body("""\
        data = [2, 4, 4, 4, 5, 5, 7, 9]
        return [statistics.mean([1, 2, 3, 4]), statistics.median(data), statistics.mode(data),
                statistics.pstdev(data), statistics.stdev(data), statistics.variance([1, 2, 3, 4])]
        """, "import statistics\n"), {}, [2.5, 4.5, 4, 2.0, 2.138089935299395, 1.6666666666666667]),
    case("string-constants-and-html", body("""\
        return [html.escape(payload["s"]), html.unescape("&lt;&amp;&#39;"), string.digits,
                string.ascii_lowercase[:5], string.capwords("hello  big world")]
        """, "import html\nimport string\n"), {"s": "<a href='x'>&</a>"},
         ["&lt;a href=&#x27;x&#x27;&gt;&amp;&lt;/a&gt;", "<&'", "0123456789", "abcde",
          "Hello Big World"]),
    case("urllib-parse", body("""\
        q = urllib.parse.urlencode({"a": 1, "b": "x y"})
        u = urllib.parse.urlparse("https://example.com:8080/p/a?x=1&x=2#f")
        return [q, urllib.parse.quote("a b/c"), urllib.parse.parse_qs(u.query), u.hostname,
                u.port, urllib.parse.urljoin("https://e.com/a/b", "../c"),
                parse.quote_plus("a b&c"), urlencode([("k", "v")])]
        """, "import urllib.parse\nfrom urllib import parse\nfrom urllib.parse import urlencode\n"),
         {}, ["a=1&b=x+y", "a%20b/c", {"x": ["1", "2"]}, "example.com", 8080, "https://e.com/c",
              "a+b%26c", "k=v"]),
]

CLASSES = [
    case("class-self-attributes-inheritance-super", """\
        class Animal:
            def __init__(self, name):
                self.name = name
                self.sounds = []
            def speak(self):
                return self.name + " makes a sound"
        class Dog(Animal):
            def __init__(self, name, breed):
                super().__init__(name)
                self.breed = breed
            def speak(self):
                self.sounds.append("woof")
                return super().speak() + ": woof"
        class Puppy(Dog):
            def speak(self):
                return super(Puppy, self).speak() + "!"
        def h(payload):
            d = Puppy(payload["name"], "lab")
            d.age = 1
            return [d.speak(), d.breed, d.sounds, d.age, isinstance(d, Animal),
                    issubclass(Puppy, Dog)]
        """, {"name": "Rex"}, ["Rex makes a sound: woof!", "lab", ["woof"], 1, True, True]),
    case("property-staticmethod-classmethod", """\
        class Temp:
            scale = "C"
            def __init__(self, c):
                self.c = c
            @property
            def f(self):
                return self.c * 9 / 5 + 32
            @staticmethod
            def clamp(v):
                return max(0, min(100, v))
            @classmethod
            def boiling(cls):
                return cls(100)
        def h(payload):
            t = Temp.boiling()
            return [t.f, Temp.clamp(150), t.scale, Temp(0).f]
        """, {}, [212.0, 100, "C", 32.0]),
    case("augmented-assignment-on-attributes-and-class-dicts", """\
        class Counter:
            defaults = {"retries": 3}
            def __init__(self):
                self.count = 0
                self.items = []
        def h(payload):
            c = Counter()
            for item in payload["items"]:
                c.count += 1
                c.items += [item]
            setattr(c, "extra", 5)
            Counter.defaults["retries"] += 1
            return [c.count, c.items, getattr(c, "extra"), hasattr(c, "missing"),
                    getattr(c, "missing", "default"), Counter.defaults]
        """, {"items": ["a", "b"]}, [2, ["a", "b"], 5, False, "default", {"retries": 4}]),
    case("comparison-dunders-and-sorting", """\
        class Version:
            def __init__(self, text):
                self.parts = [int(p) for p in text.split(".")]
            def __lt__(self, other):
                return self.parts < other.parts
            def __eq__(self, other):
                return self.parts == other.parts
        def h(payload):
            vs = sorted(Version(v) for v in payload)
            names = [".".join(str(p) for p in v.parts) for v in vs]
            return [names, Version("1.0") == Version("1.0"), Version("1.0") != Version("1.1")]
        """, ["1.10", "1.2", "0.9"], [["0.9", "1.2", "1.10"], True, True]),
]

CONTROL_FLOW = [
    case("generators-and-yield-from", """\
        def squares(n):
            for i in range(n):
                yield i * i
        def both(n):
            yield from squares(n)
            yield from ["done"]
        def echo():
            received = yield "ready"
            yield received * 2
        def h(payload):
            e = echo()
            return [list(both(4)), sum(x for x in squares(4)), next(e), e.send(21)]
        """, {}, [[0, 1, 4, 9, "done"], 14, "ready", 42]),
    case("exceptions-try-except-else-finally-reraise", """\
        class AppError(ValueError):
            def __init__(self, message, code):
                super().__init__(message, code)
                self.code = code
        def risky(x):
            if x < 0:
                raise AppError("negative", 400)
            return x
        def h(payload):
            log = []
            for x in payload:
                try:
                    v = risky(x)
                except AppError as e:
                    log.append([str(e.args[0]), e.code])
                else:
                    log.append(v)
                finally:
                    log.append("f")
            try:
                try:
                    {}["missing"]
                except KeyError:
                    raise
            except LookupError as e:
                log.append(repr(e))
            try:
                raise RuntimeError("outer") from ValueError("inner")
            except (TypeError, RuntimeError) as e:
                log.append(str(e))
            return log
        """, [1, -1], [1, "f", ["negative", 400], "f", "KeyError('missing')", "outer"]),
    case("lambdas-and-closures", """\
        def make_adder(n):
            return lambda x: x + n
        def counter():
            state = {"n": 0}
            def bump():
                state["n"] += 1
                return state["n"]
            return bump
        def h(payload):
            add5 = make_adder(5)
            bump = counter()
            bump()
            fns = [lambda i=i: i * 10 for i in range(3)]
            return [add5(1), bump(), [f() for f in fns], (lambda *a, **k: [a, k])(1, b=2)]
        """, {}, [6, 2, [0, 10, 20], [[1], {"b": 2}]]),
    case("builtins-over-iterables", body("""\
        words = payload["words"]
        return [sorted(words, key=len, reverse=True), min(words), max(words, key=len),
                list(map(str.upper, words)), list(filter(None, [0, 1, "", "x"])),
                list(zip(words, range(3))), list(enumerate(words, start=1)),
                list(reversed(words)), sum([1, 2, 3], 10), any([0, 1]), all([]),
                divmod(17, 5), abs(-2), round(2.5), round(2.675, 2), int("ff", 16)]
        """), {"words": ["pear", "fig", "banana"]},
         [["banana", "pear", "fig"], "banana", "banana", ["PEAR", "FIG", "BANANA"], [1, "x"],
          [["pear", 0], ["fig", 1], ["banana", 2]], [[1, "pear"], [2, "fig"], [3, "banana"]],
          ["banana", "fig", "pear"], 16, True, True, [3, 2], 2, 2, 2.67, 255]),
    case("container-mutation", body("""\
        d = {"a": 1, "b": [1]}
        d["a"] += 1
        d["b"].append(2)
        d["b"][0] += 10
        d.setdefault("c", {})["x"] = 1
        d["c"]["x"] *= 5
        del d["a"]
        lst = sorted([5, 3, 1, 4])
        lst[1:3] = [9]
        del lst[0]
        lst += [7]
        s = {1, 2}
        s.add(3)
        s.discard(1)
        return [d, lst, sorted(s), d.pop("c"), list(d.items())]
        """), {}, [{"b": [11, 2]}, [9, 5, 7], [2, 3], {"x": 5}, [["b", [11, 2]]]]),
    case("unpacking-nested-and-starred", body("""\
        a, b = 1, 2
        a, b = b, a
        (c, d), e = (3, 4), 5
        first, *rest = [1, 2, 3]
        *init, last = "xyz"
        out = [[i, k, v] for i, (k, v) in enumerate(sorted({"q": 1, "p": 2}.items()))]
        args, kwargs = [1, 2], {"sep": "-"}
        joined = "-".join(str(x) for x in [*args, *rest])
        return [a, b, c, d, e, first, rest, init, last, out, joined, {**kwargs, "end": "!"}]
        """), {}, [2, 1, 3, 4, 5, 1, [2, 3], ["x", "y"], "z", [[0, "p", 2], [1, "q", 1]],
                   "1-2-2-3", {"sep": "-", "end": "!"}]),
    case("comprehensions-and-walrus", body("""\
        data = payload["n"]
        evens = [y for x in data if (y := x * 2) > 2]
        return [evens, {str(x): x * x for x in data}, sorted({x % 2 for x in data}),
                [[i, j] for i in range(2) for j in range(2) if i != j]]
        """), {"n": [1, 2, 3]},
         [[4, 6], {"1": 1, "2": 4, "3": 9}, [0, 1], [[0, 1], [1, 0]]]),
    case("recursion-and-globals", """\
        calls = []
        def fib(n):
            calls.append(n)
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        def h(payload):
            return [fib(payload), len(calls)]
        """, 10, [55, 177]),
]

STRINGS = [
    case("f-strings", body("""\
        x, v, name, n, w = 3, 3.14159, "Ann", 1234567, 10
        return [f"{x=}", f"{v:>8.2f}", f"{name!r}", f"{n:,}", f"{x:08b}", f"{v:{w}.{x}f}",
                f"{name:*^9}", f"{'nested ' + name}", f"{{literal}}", f"{v=:.1f}"]
        """), {}, ["x=3", "    3.14", "'Ann'", "1,234,567", "00000011", "     3.142",
                   "***Ann***", "nested Ann", "{literal}", "v=3.1"]),
    case("percent-formatting", body("""\
        return ["%s is %d, %.2f%%" % ("x", 42, 99.5), "%(a)s-%(b)05.1f" % {"a": 1, "b": 2},
                "%-5s|%5s|" % ("l", "r"), "%x %o %e" % (255, 8, 1234.5)]
        """), {}, ["x is 42, 99.50%", "1-002.0", "l    |    r|", "ff 10 1.234500e+03"]),
    case("str-format-and-format-map-plain-fields", body("""\
        return ["{} {}".format(1, 2), "{0}{1}{0}".format("a", "b"),
                "{name:>5}|{n:03d}".format(name="x", n=7), "{:,}".format(1234567),
                "{a}-{b!r}".format_map({"a": 1, "b": "q"}), str.format("{}!", "hi"),
                "{0:{1}}".format(3.5, "^7"), format(0.5, ".0%"), format(255, "x")]
        """), {}, ["1 2", "aba", "    x|007", "1,234,567", "1-'q'", "hi!", "  3.5  ", "50%",
                   "ff"]),
    case("string-methods", body("""\
        s = payload["s"]
        return [s.strip().split(","), "-".join(["a", "b"]), s.upper().strip(), s[::-1].strip(),
                s.replace("a", "4").strip(), s.strip().startswith("a"), "7".zfill(3),
                s.count("a"), "é".encode("utf-8").hex(), b"\\xc3\\xa9".decode(), ord("A"), chr(66)]
        """), {"s": " a,b,ca "},
         [["a", "b", "ca"], "a-b", "A,B,CA", "ac,b,a", "4,b,c4", True, "007", 2, "c3a9", "é",
          65, "B"]),
]

NESTED = {"ok": True, "items": [{"id": 1, "tags": ["a"]}, {"id": 2, "tags": []}],
          "meta": {"count": 2, "ratio": 0.5, "none": None, "text": "é✓", "deep": [[[[]]]]}}

HANDLERS = [
    case("exports-dict-resolution", """\
        def h(payload):
            return "not me"
        def handle(payload):
            return "exported " + payload["who"]
        exports = {"h": handle}
        """, {"who": "ok"}, "exported ok"),
    case("print-capture-exact", body("""\
        print("hello", payload["name"])
        print(1, 2, 3, sep=", ", end=";\\n")
        print()
        print("no newline", end="")
        return "done"
        """), {"name": "Ann"}, "done", "hello Ann\n1, 2, 3;\n\nno newline"),
    case("printed-returns-the-logs", body("""\
        for i in range(3):
            print("line", i)
        return printed
        """), {}, "line 0\nline 1\nline 2\n", "line 0\nline 1\nline 2\n"),
    case("module-level-print-is-captured", 'print("loading")\n' + body('return "ready"'), {},
         "ready", "loading\n"),
    case("nested-json-return", body(f"return {NESTED!r}"), {}, NESTED),
    case("tuples-become-lists", body("return (1, (2, 3), {'t': (4,)}, payload)"), {"p": [1]},
         [1, [2, 3], {"t": [4]}, {"p": [1]}]),
    case("none-result", body("pass"), {}, None),
]

BENIGN = STDLIB + CLASSES + CONTROL_FLOW + STRINGS + HANDLERS


@pytest.mark.parametrize(("source", "payload", "expected", "logs"), BENIGN)
def test_benign_program_works(source: str, payload: object, expected: object,
                              logs: str) -> None:
    assert run_source(source, "h", payload) == (expected, logs)


def test_every_invocation_starts_fresh() -> None:
    source = "seen = []\ndef h(payload):\n    seen.append(payload)\n    return seen\n"
    assert run_source(source, "h", 1) == ([1], "")
    assert run_source(source, "h", 2) == ([2], "")


TYPED_HANDLER = '''\
from __future__ import annotations
from typing import Any, Dict, List, Optional
import typing

LIMIT: int = 5
declared_only: List[str]


class Box:
    size: int = 2

    def __init__(self) -> None:
        self.items: List[int] = []


def counter() -> Any:
    n = 0

    def bump() -> int:
        nonlocal n
        n += 1
        return n

    return bump


def h(payload: Dict[str, Any]) -> Optional[List[Any]]:
    bump = counter()
    bump()
    bump()
    x: typing.Optional[int] = typing.cast(int, payload["x"])
    box = Box()
    box.items.append(LIMIT)
    return [bump(), x, Box.size, box.items]
'''


def test_type_hints_future_annotations_and_nonlocal_work() -> None:
    assert run_source(TYPED_HANDLER, "h", {"x": 7}) == ([3, 7, 2, [5]], "")


@pytest.mark.parametrize("source", [
    "x: int = __builtins__\ndef h(p):\n    return 1\n",
    "def h(p):\n    y: int = p.__class__\n    return 1\n",
    "def h(p):\n    def f():\n        nonlocal _getattr_\n    return 1\n",
    "from typing import get_type_hints\ndef h(p):\n    return 1\n",
    "import __future__\ndef h(p):\n    return 1\n",
], ids=["annotated-dunder-value", "annotated-dunder-attribute", "nonlocal-guard-name",
        "typing-get-type-hints", "plain-import-future"])
def test_annotations_and_nonlocal_keep_the_name_rules(source: str) -> None:
    with pytest.raises(CompileError):
        run_source(source, "h", {})
