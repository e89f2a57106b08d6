"""Ordinary handler code keeps working under the policy, with exact results and logs.

Each case is (source, payload, expected value[, expected logs]); the handler is `h`. The
programs are plain Python: under CPython without the sandbox they return the same values.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

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

# -- the language FDK apps are written in: dunders, match, dataclasses, enum, functools,
# zoneinfo, logging (tests/test_language.py has the attacks on each) -------------------------

DUNDERS = [
    case("money-value-object", """\
        class Money:
            def __init__(self, cents, currency="USD"):
                self.cents = cents
                self.currency = currency
            def __add__(self, other):
                return Money(self.cents + other.cents, self.currency)
            def __radd__(self, other):
                return self if other == 0 else self + other
            def __mul__(self, k):
                return Money(round(self.cents * k), self.currency)
            def __eq__(self, other):
                return isinstance(other, Money) and (self.cents, self.currency) == (
                    other.cents, other.currency)
            def __hash__(self):
                return hash((self.cents, self.currency))
            def __repr__(self):
                return f"Money({self.cents}, {self.currency!r})"
            def __str__(self):
                return f"{self.cents / 100:.2f} {self.currency}"
            def __format__(self, spec):
                return format(self.cents / 100, spec or ".2f") + " " + self.currency
        def h(payload):
            lines = [Money(c) for c in payload["cents"]]
            total = sum(lines)
            return [str(total), repr(total * 1.5), f"{total:,.1f}", len(set(lines)),
                    Money(5) == Money(5), Money(5) == 5]
        """, {"cents": [1999, 1, 1999]},
         ["39.99 USD", "Money(5998, 'USD')", "40.0 USD", 2, True, False]),
    case("vector-operators-reflected-and-in-place", """\
        class Vec:
            def __init__(self, x, y):
                self.x, self.y = x, y
            def __add__(self, o):
                return Vec(self.x + o.x, self.y + o.y)
            def __sub__(self, o):
                return Vec(self.x - o.x, self.y - o.y)
            def __mul__(self, k):
                return Vec(self.x * k, self.y * k)
            def __rmul__(self, k):
                return self * k
            def __iadd__(self, o):
                self.x += o.x
                self.y += o.y
                return self
            def __neg__(self):
                return Vec(-self.x, -self.y)
            def __abs__(self):
                return (self.x ** 2 + self.y ** 2) ** 0.5
            def __bool__(self):
                return bool(self.x or self.y)
            def __iter__(self):
                yield self.x
                yield self.y
            def __eq__(self, o):
                return tuple(self) == tuple(o)
        def h(payload):
            p = Vec(*payload["start"])
            for step in payload["steps"]:
                p += Vec(*step)
            x, y = p
            return [[x, y], list(2 * p), list(-p - Vec(1, 1)), abs(Vec(3, 4)),
                    bool(Vec(0, 0)), p == Vec(4, 6)]
        """, {"start": [1, 1], "steps": [[1, 2], [2, 3]]},
         [[4, 6], [8, 12], [-5, -7], 5.0, False, True]),
    case("container-protocol", """\
        class Inventory:
            def __init__(self):
                self.items = {}
            def __setitem__(self, sku, qty):
                if qty < 0:
                    raise ValueError("negative quantity")
                self.items[sku] = qty
            def __getitem__(self, sku):
                return self.items.get(sku, 0)
            def __delitem__(self, sku):
                del self.items[sku]
            def __contains__(self, sku):
                return self.items.get(sku, 0) > 0
            def __len__(self):
                return sum(1 for q in self.items.values() if q)
            def __iter__(self):
                return iter(sorted(self.items))
            def __reversed__(self):
                return iter(sorted(self.items, reverse=True))
        def h(payload):
            inv = Inventory()
            for sku, qty in payload.items():
                inv[sku] = qty
            inv["B-2"] += 3
            del inv["C-3"]
            try:
                inv["D-4"] = -1
            except ValueError as e:
                error = str(e)
            return [len(inv), list(inv), list(reversed(inv)), "A-1" in inv, "Z" in inv,
                    inv["B-2"], error]
        """, {"A-1": 2, "B-2": 0, "C-3": 5},
         [2, ["A-1", "B-2"], ["B-2", "A-1"], True, False, 3, "negative quantity"]),
    case("iterator-protocol", """\
        class Pages:
            def __init__(self, items, size):
                self.items, self.size, self.at = items, size, 0
            def __iter__(self):
                return self
            def __next__(self):
                if self.at >= len(self.items):
                    raise StopIteration
                page = self.items[self.at:self.at + self.size]
                self.at += self.size
                return page
        def h(payload):
            pages = Pages(list(range(payload)), 3)
            first = next(pages)
            return [first, list(pages), list(Pages([], 2))]
        """, 8, [[0, 1, 2], [[3, 4, 5], [6, 7]], []]),
    case("context-manager-transaction", """\
        class Transaction:
            def __init__(self, log):
                self.log = log
            def __enter__(self):
                self.log.append("begin")
                return self
            def __exit__(self, kind, error, tb):
                self.log.append("rollback" if kind else "commit")
                return kind is not None and issubclass(kind, LookupError)
        def h(payload):
            log = []
            with Transaction(log):
                log.append("write 1")
            with Transaction(log) as tx:
                tx.log.append("write 2")
                payload["missing"]
            try:
                with Transaction(log):
                    raise ValueError("bad row")
            except ValueError as e:
                log.append(str(e))
            return log
        """, {}, ["begin", "write 1", "commit", "begin", "write 2", "rollback", "begin",
                  "rollback", "bad row"]),
    case("callable-objects-as-keys-and-filters", """\
        class Above:
            def __init__(self, limit):
                self.limit = limit
            def __call__(self, value):
                return value > self.limit
        class ByField:
            def __init__(self, name):
                self.name = name
            def __call__(self, row):
                return row[self.name]
        def h(payload):
            rows = payload["rows"]
            ordered = [r["n"] for r in sorted(rows, key=ByField("p"))]
            return [list(filter(Above(2), [1, 3, 5])), ordered,
                    callable(Above(1)), max(rows, key=ByField("p"))["n"]]
        """, {"rows": [{"n": "a", "p": 3}, {"n": "b", "p": 1}, {"n": "c", "p": 2}]},
         [[3, 5], ["b", "c", "a"], True, "a"]),
    case("numeric-conversions-and-total-ordering", """\
        from functools import total_ordering
        @total_ordering
        class Version:
            def __init__(self, text):
                self.parts = tuple(int(p) for p in text.split("."))
            def __eq__(self, other):
                return self.parts == other.parts
            def __lt__(self, other):
                return self.parts < other.parts
            def __int__(self):
                return self.parts[0]
            def __float__(self):
                return float(".".join(str(p) for p in self.parts[:2]))
            def __str__(self):
                return ".".join(map(str, self.parts))
        def h(payload):
            vs = [Version(v) for v in payload]
            return [[str(v) for v in sorted(vs)], str(max(vs)), Version("2.0") >= Version("1.9"),
                    Version("1.0") <= Version("1.0"), int(vs[0]), float(vs[1])]
        """, ["1.10.0", "1.2", "0.9.1"],
         [["0.9.1", "1.2", "1.10.0"], "1.10.0", True, True, 1, 1.2]),
    case("dict-subclass-missing-and-repr", """\
        class Tree(dict):
            def __missing__(self, key):
                self[key] = Tree()
                return self[key]
            def __repr__(self):
                return "Tree(" + ", ".join(f"{k}={v!r}" for k, v in sorted(self.items())) + ")"
        def h(payload):
            t = Tree()
            for path in payload:
                node = t
                for part in path.split("/"):
                    node = node[part]
            return [repr(t), sorted(t["a"]), f"{t['b']!r}"]
        """, ["a/x", "a/y", "b"], ["Tree(a=Tree(x=Tree(), y=Tree()), b=Tree())", ["x", "y"],
                                   "Tree()"]),
]

MATCH = [
    case("match-event-names-or-guards-wildcard", """\
        def h(payload):
            out = []
            for event, n in payload:
                match event:
                    case "onCallCreate" | "onCallUpdate" if n > 1:
                        out.append("call, busy")
                    case "onCallCreate" | "onCallUpdate":
                        out.append("call")
                    case "onAgentUpdate":
                        out.append("agent")
                    case None:
                        out.append("none")
                    case _:
                        out.append("other: " + str(event))
            return out
        """, [["onCallCreate", 1], ["onCallUpdate", 5], ["onAgentUpdate", 0], [None, 0],
              ["onX", 0]], ["call", "call, busy", "agent", "none", "other: onX"]),
    case("match-mapping-payloads", """\
        def describe(data):
            match data:
                case {"type": "ticket", "priority": "urgent" | "high" as p, **rest}:
                    return f"escalate ({p}) with {sorted(rest)}"
                case {"type": "ticket", "requester": {"email": str(email)}}:
                    return "reply to " + email
                case {"type": "call", "duration": int(secs)} if secs > 60:
                    return f"long call {secs // 60}m"
                case {"type": kind}:
                    return "ignored " + kind
                case _:
                    return "malformed"
        def h(payload):
            return [describe(d) for d in payload]
        """, [{"type": "ticket", "priority": "high", "id": 1, "tags": []},
              {"type": "ticket", "requester": {"email": "a@b.c"}},
              {"type": "call", "duration": 125}, {"type": "call", "duration": 30}, [1]],
         ["escalate (high) with ['id', 'tags']", "reply to a@b.c", "long call 2m",
          "ignored call", "malformed"]),
    case("match-sequences-commands", """\
        def run(command, stack):
            match command.split():
                case ["push", value]:
                    stack.append(int(value))
                case ["add"]:
                    stack.append(stack.pop() + stack.pop())
                case ["dup", *times] if times:
                    stack.extend([stack[-1]] * int(times[0]))
                case ["dup"]:
                    stack.append(stack[-1])
                case [op, *args]:
                    return f"unknown {op} {args}"
                case []:
                    return "empty"
            return None
        def h(payload):
            stack, errors = [], []
            for command in payload:
                error = run(command, stack)
                if error:
                    errors.append(error)
            return [stack, errors]
        """, ["push 2", "push 3", "add", "dup 2", "", "mul 2 3", "dup"],
         [[5, 5, 5, 5], ["empty", "unknown mul ['2', '3']"]]),
    case("match-class-patterns-on-dataclasses", """\
        from dataclasses import dataclass
        @dataclass
        class Point:
            x: int
            y: int
        @dataclass
        class Circle:
            center: Point
            r: int
        def where(shape):
            match shape:
                case Point(0, 0):
                    return "origin"
                case Point(x=0, y=y):
                    return f"on the y axis at {y}"
                case Circle(Point(x, y), r) if r > 10:
                    return f"big circle at {x},{y}"
                case Circle(center=Point(), r=r):
                    return f"circle r={r}"
                case Point():
                    return "a point"
        def h(payload):
            return [where(Point(0, 0)), where(Point(0, 4)), where(Circle(Point(1, 2), 20)),
                    where(Circle(Point(1, 2), 3)), where(Point(5, 5))]
        """, {}, ["origin", "on the y axis at 4", "big circle at 1,2", "circle r=3",
                  "a point"]),
    case("match-builtin-types", """\
        def kind(value):
            match value:
                case bool(b):
                    return f"bool {b}"
                case int(n) | float(n):
                    return f"number {n}"
                case str() as s if not s:
                    return "empty string"
                case str(s):
                    return f"string {s.upper()}"
                case [int(), *_] as items:
                    return f"ints {len(items)}"
                case dict() | list():
                    return "container"
            return "other"
        def h(payload):
            return [kind(v) for v in payload]
        """, [True, 3, 2.5, "", "x", [1, "a"], ["a"], {}, None],
         ["bool True", "number 3", "number 2.5", "empty string", "string X", "ints 2",
          "container", "container", "other"]),
    case("match-enum-members-and-captures", """\
        from enum import Enum
        class Status(Enum):
            OPEN = "open"
            PENDING = "pending"
            CLOSED = "closed"
        def next_step(status, age):
            match Status(status), age:
                case Status.OPEN, a if a > 48:
                    return "escalate"
                case (Status.OPEN | Status.PENDING) as s, _:
                    return f"wait on {s.value}"
                case Status.CLOSED, _:
                    return "archive"
        def h(payload):
            return [next_step(s, a) for s, a in payload]
        """, [["open", 50], ["open", 1], ["pending", 99], ["closed", 0]],
         ["escalate", "wait on open", "wait on pending", "archive"]),
]

DATACLASSES = [
    case("dataclass-defaults-factory-post-init", """\
        from dataclasses import dataclass, field, asdict
        @dataclass
        class Ticket:
            subject: str
            priority: int = 1
            tags: list = field(default_factory=list)
            watchers: dict = field(default_factory=dict, repr=False)
            def __post_init__(self):
                self.subject = self.subject.strip()
                self.tags = sorted(set(self.tags))
        def h(payload):
            t = Ticket(**payload)
            t.watchers["a@b.c"] = True
            return [asdict(t), repr(t), t == Ticket("Printer", 2, ["hw"]), Ticket("x").tags]
        """, {"subject": " Printer ", "priority": 2, "tags": ["hw", "hw"]},
         [{"subject": "Printer", "priority": 2, "tags": ["hw"], "watchers": {"a@b.c": True}},
          "Ticket(subject='Printer', priority=2, tags=['hw'])", False, []]),
    case("dataclass-frozen-hash-replace", """\
        from dataclasses import dataclass, replace, FrozenInstanceError
        @dataclass(frozen=True)
        class Key:
            account: str
            region: str = "US"
        def h(payload):
            k = Key(payload["account"])
            seen = {k: 1, Key(payload["account"]): 2}
            try:
                k.region = "EU"
            except FrozenInstanceError as e:
                error = str(e)
            moved = replace(k, region="EU")
            return [len(seen), seen[k], moved.region, k.region, error, moved != k]
        """, {"account": "42"}, [1, 2, "EU", "US", "cannot assign to field 'region'", True]),
    case("dataclass-order-compare-astuple", """\
        from dataclasses import dataclass, field, astuple
        @dataclass(order=True)
        class Task:
            due: str
            priority: int
            name: str = field(compare=False)
        def h(payload):
            tasks = sorted(Task(d, p, n) for n, d, p in payload)
            return [[t.name for t in tasks], astuple(tasks[0]),
                    Task("a", 1, "x") == Task("a", 1, "y")]
        """, [["b", "2024-02-01", 1], ["a", "2024-01-01", 2], ["c", "2024-01-01", 1]],
         [["c", "a", "b"], ["2024-01-01", 1, "c"], True]),
    case("dataclass-inheritance-fields-kw-only", """\
        from __future__ import annotations
        from dataclasses import dataclass, fields
        @dataclass
        class Event:
            name: str
            account: str
        @dataclass(kw_only=True)
        class CallEvent(Event):
            duration: int = 0
            missed: bool = False
        def h(payload):
            e = CallEvent("onCallCreate", "42", duration=payload, missed=not payload)
            return [[f.name for f in fields(e)], e.duration, e.missed, isinstance(e, Event),
                    [f.type for f in fields(CallEvent)]]
        """, 0, [["name", "account", "duration", "missed"], 0, True, True,
                 ["str", "str", "int", "bool"]]),
    case("dataclass-nested-asdict-to-json", """\
        import json
        from dataclasses import dataclass, field, asdict
        @dataclass
        class Line:
            sku: str
            qty: int
        @dataclass
        class Order:
            id: int
            lines: list = field(default_factory=list)
            meta: dict = field(default_factory=dict)
            def total(self):
                return sum(l.qty for l in self.lines)
        def h(payload):
            order = Order(payload["id"], [Line(**l) for l in payload["lines"]], {"src": ("api", 2)})
            return [asdict(order), order.total(), json.dumps(asdict(order)["lines"][0])]
        """, {"id": 7, "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 3}]},
         [{"id": 7, "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 3}],
           "meta": {"src": ["api", 2]}}, 5, '{"sku": "a", "qty": 2}']),
]

ENUMS = [
    case("enum-auto-lookup-iteration-methods", """\
        from enum import Enum, auto, unique
        @unique
        class Channel(Enum):
            EMAIL = auto()
            PHONE = auto()
            CHAT = auto()
            @property
            def label(self):
                return self.name.title()
            def is_live(self):
                return self in (Channel.PHONE, Channel.CHAT)
        def h(payload):
            c = Channel[payload.upper()]
            return [c.value, c.label, c.is_live(), Channel(1).name, len(Channel),
                    [ch.name for ch in Channel], Channel.CHAT in Channel, repr(c), str(c)]
        """, "phone", [2, "Phone", True, "EMAIL", 3, ["EMAIL", "PHONE", "CHAT"], True,
                       "<Channel.PHONE: 2>", "Channel.PHONE"]),
    case("intenum-strenum", """\
        import json
        from enum import IntEnum, StrEnum, auto
        class Priority(IntEnum):
            LOW = 1
            MEDIUM = 2
            HIGH = 3
        class Region(StrEnum):
            US = auto()
            EU = auto()
        def h(payload):
            p = Priority(payload["p"])
            return [p > Priority.LOW, p + 1, sorted([Priority.HIGH, Priority.LOW])[0].name,
                    Region.EU.value, Region.US == "us", "region-" + Region.EU,
                    json.dumps({"p": p, "r": Region.US}), int(p), p.name]
        """, {"p": 2}, [True, 3, "LOW", "eu", True, "region-eu", '{"p": 2, "r": "us"}', 2,
                        "MEDIUM"]),
    case("flag-combinations", """\
        from enum import Flag, IntFlag, auto
        class Perm(Flag):
            READ = auto()
            WRITE = auto()
            ADMIN = auto()
        class Bits(IntFlag):
            A = 1
            B = 2
        def h(payload):
            granted = Perm(0)
            for name in payload:
                granted |= Perm[name]
            return [str(granted), Perm.WRITE in granted, Perm.ADMIN in granted,
                    [p.name for p in granted], int(Bits.A | Bits.B), bool(granted & Perm.ADMIN),
                    granted.value]
        """, ["READ", "WRITE"], ["Perm.READ|WRITE", True, False, ["READ", "WRITE"], 3, False, 3]),
    case("enum-tuple-values-init-and-str", """\
        from enum import Enum
        class Plan(Enum):
            FREE = (0, 1)
            PRO = (49, 10)
            def __init__(self, price, seats):
                self.price = price
                self.seats = seats
            def __str__(self):
                return f"{self.name.lower()} (${self.price}, {self.seats} seats)"
        def h(payload):
            plan = Plan[payload]
            return [str(plan), plan.value, plan.seats, f"{plan}", Plan((0, 1)).name]
        """, "PRO", ["pro ($49, 10 seats)", [49, 10], 10, "pro ($49, 10 seats)", "FREE"]),
]

FUNCTOOLS = [
    case("functools-partial-reduce-cmp-to-key", """\
        from functools import partial, reduce, cmp_to_key
        def scale(factor, value, offset=0):
            return factor * value + offset
        def by_length_then_text(a, b):
            return (len(a) - len(b)) or ((a > b) - (a < b))
        def h(payload):
            double = partial(scale, 2, offset=1)
            return [list(map(double, payload["n"])), reduce(lambda a, b: a * b, payload["n"], 1),
                    sorted(payload["w"], key=cmp_to_key(by_length_then_text)),
                    double.args, double.keywords]
        """, {"n": [1, 2, 3], "w": ["bb", "a", "ab", "c"]},
         [[3, 5, 7], 6, ["a", "c", "ab", "bb"], [2], {"offset": 1}]),
    case("functools-lru-cache-cache-wraps", """\
        from functools import lru_cache, cache, wraps
        calls = []
        def traced(fn):
            @wraps(fn)
            def wrapper(*args):
                calls.append(args)
                return fn(*args)
            return wrapper
        @lru_cache(maxsize=None)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        @cache
        @traced
        def slow_square(n):
            return n * n
        def h(payload):
            info = fib.cache_info()
            return [fib(payload), list(fib.cache_info())[1:], [slow_square(3), slow_square(3)],
                    len(calls), list(info)]
        """, 30, [832040, [31, None, 31], [9, 9], 1, [0, 0, None, 0]]),
]

ZONES = [
    case("zoneinfo-new-york-utc-across-dst", """\
        from datetime import datetime, timedelta, timezone
        from zoneinfo import ZoneInfo
        NY = ZoneInfo("America/New_York")
        def h(payload):
            out = []
            for text in payload:
                at = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
                local = at.astimezone(NY)
                out.append([local.isoformat(), local.tzname(), local.dst().total_seconds()])
            spring = datetime(2024, 3, 10, 1, 59, tzinfo=NY) + timedelta(minutes=1)
            return [out, spring.isoformat(), spring.astimezone(timezone.utc).isoformat()]
        """, ["2024-03-10T06:59:00", "2024-03-10T07:00:00", "2024-11-03T05:30:00",
              "2024-11-03T06:30:00"],
         [[["2024-03-10T01:59:00-05:00", "EST", 0.0], ["2024-03-10T03:00:00-04:00", "EDT", 3600.0],
           ["2024-11-03T01:30:00-04:00", "EDT", 3600.0], ["2024-11-03T01:30:00-05:00", "EST", 0.0]],
          "2024-03-10T02:00:00-05:00", "2024-03-10T07:00:00+00:00"]),
    case("zoneinfo-local-to-utc-and-folds", """\
        from datetime import datetime, timezone
        from zoneinfo import ZoneInfo
        def h(payload):
            zone = ZoneInfo(payload["zone"])
            local = datetime.fromisoformat(payload["local"]).replace(tzinfo=zone)
            later = local.replace(fold=1)
            return [local.astimezone(timezone.utc).isoformat(),
                    later.astimezone(timezone.utc).isoformat(), local.utcoffset().total_seconds(),
                    later.tzname(), str(zone), zone.key]
        """, {"zone": "America/New_York", "local": "2024-11-03T01:30:00"},
         ["2024-11-03T05:30:00+00:00", "2024-11-03T06:30:00+00:00", -14400.0, "EST",
          "America/New_York", "America/New_York"]),
    case("zoneinfo-business-hours-in-many-zones", """\
        from datetime import datetime, timezone
        from zoneinfo import ZoneInfo
        def open_now(at, zone, start=9, end=17):
            local = at.astimezone(ZoneInfo(zone))
            is_open = start <= local.hour < end and local.weekday() < 5
            return [zone, local.strftime("%a %H:%M %Z"), is_open]
        def h(payload):
            at = datetime.fromisoformat(payload).astimezone(timezone.utc)
            return [open_now(at, z) for z in ("Europe/London", "Asia/Kolkata",
                                              "America/Los_Angeles", "Australia/Sydney")]
        """, "2024-07-01T12:00:00+00:00",
         [["Europe/London", "Mon 13:00 BST", True], ["Asia/Kolkata", "Mon 17:30 IST", False],
          ["America/Los_Angeles", "Mon 05:00 PDT", False],
          ["Australia/Sydney", "Mon 22:00 AEST", False]]),
    case("zoneinfo-next-local-nine-as-utc", """\
        from datetime import datetime, time, timedelta, timezone
        from zoneinfo import ZoneInfo
        def next_nine(now_utc, zone):
            local = now_utc.astimezone(zone)
            target = datetime.combine(local.date(), time(9), tzinfo=zone)
            if target <= local:
                target = datetime.combine(local.date() + timedelta(days=1), time(9), tzinfo=zone)
            return target.astimezone(timezone.utc).isoformat()
        def h(payload):
            la = ZoneInfo("America/Los_Angeles")
            return [next_nine(datetime.fromisoformat(t), la) for t in payload]
        """, ["2024-03-09T18:00:00+00:00", "2024-03-10T18:00:00+00:00",
              "2024-11-02T15:00:00+00:00"],
         ["2024-03-10T16:00:00+00:00", "2024-03-11T16:00:00+00:00",
          "2024-11-02T16:00:00+00:00"]),
    case("zoneinfo-known-zones-and-errors", """\
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones
        def h(payload):
            known = available_timezones()
            out = []
            for key in payload:
                try:
                    out.append(str(ZoneInfo(key)))
                except ZoneInfoNotFoundError:
                    out.append("unknown " + key)
            return [out, "Europe/Paris" in known, len(known) > 400]
        """, ["Europe/Paris", "Mars/Olympus", "UTC"],
         [["Europe/Paris", "unknown Mars/Olympus", "UTC"], True, True]),
]

LOGGING = [
    case("logging-getlogger-name-basicconfig-levels", """\
        import logging
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        log = logging.getLogger(__name__)
        def h(payload):
            log.debug("not shown: %s", payload)
            log.info("processing %d items", len(payload))
            for item in payload:
                if item < 0:
                    log.warning("negative item %s", item)
            return sum(payload)
        """, [1, -2, 3], 2, "INFO:server:processing 3 items\nWARNING:server:negative item -2\n"),
    case("logging-hierarchy-exception-isenabledfor", """\
        import logging
        root = logging.getLogger("app")
        db = logging.getLogger("app.db")
        def h(payload):
            root.setLevel(logging.DEBUG)
            db.debug("query %s", payload["q"])
            checks = [db.isEnabledFor(logging.DEBUG), db.getEffectiveLevel(), db.name,
                      root.getChild("cache").name]
            try:
                payload["missing"]
            except KeyError:
                db.exception("lookup failed")
            return checks
        """, {"q": "select 1"}, [True, 10, "app.db", "app.cache"],
         "DEBUG:app.db:query select 1\nERROR:app.db:lookup failed\n"
         "Traceback (most recent call last):\n  File \"server.py\", line 10, in h\n"
         "    payload[\"missing\"]\nKeyError: 'missing'\n"),
    case("logging-module-level-functions", """\
        import logging
        def h(payload):
            logging.info("dropped: the root logger starts at WARNING")
            logging.warning("disk at %d%%", payload)
            logging.error("and %(what)s", {"what": "failing"})
            logging.log(logging.CRITICAL, "stop")
            return "logged"
        """, 91, "logged", "WARNING:root:disk at 91%\nERROR:root:and failing\n"
                           "CRITICAL:root:stop\n"),
]

LANGUAGE = DUNDERS + MATCH + DATACLASSES + ENUMS + FUNCTOOLS + ZONES + LOGGING

BENIGN = STDLIB + CLASSES + CONTROL_FLOW + STRINGS + HANDLERS + LANGUAGE


@pytest.mark.parametrize(("source", "payload", "expected", "logs"), BENIGN)
def test_benign_program_works(source: str, payload: object, expected: object,
                              logs: str) -> None:
    assert run_source(source, "h", payload) == (expected, logs)


THROUGH_AN_ENGINE = [p for p in LANGUAGE if p.id in {
    "money-value-object", "context-manager-transaction", "match-mapping-payloads",
    "match-class-patterns-on-dataclasses", "dataclass-frozen-hash-replace",
    "flag-combinations", "functools-lru-cache-cache-wraps",
    "zoneinfo-new-york-utc-across-dst", "zoneinfo-business-hours-in-many-zones",
    "zoneinfo-known-zones-and-errors", "logging-getlogger-name-basicconfig-levels",
    "logging-hierarchy-exception-isenabledfor"}]


@pytest.mark.parametrize(("source", "payload", "expected", "logs"), THROUGH_AN_ENGINE)
def test_language_programs_return_the_same_through_an_engine(
        source: str, payload: object, expected: object, logs: str, engine: Any,
        tmp_path: Path) -> None:
    """In a real worker: Landlock's read-only view (zoneinfo reads tzdata there), seccomp, a
    module named server.server. The case's `h` gets its payload from the event's data."""
    from tests.conftest import make_payload

    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "server.py").write_text(
        source + "\ndef run_case(payload):\n    return h(payload['data']['input'])\n")
    (tmp_path / "manifest.json").write_text(
        '{"events": {"onCase": {"handler": "run_case", "custom": true}}}')
    result = engine.dispatch(engine.load_app(tmp_path), make_payload("onCase", input=payload))
    assert result.outcome == "ok", result.error
    assert result.value == expected
    assert result.logs.replace("server.server", "server").replace(
        "server/server.py", "server.py") == logs


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
