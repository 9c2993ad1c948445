"""Realistic Chinese personal data: names, mobiles, resident IDs, e-mails and addresses.

Everything is drawn vectorised from a generator. Resident ID numbers follow GB 11643-1999:
a 6-digit area code (the district the person lives in), the birth date ``YYYYMMDD``, a
3-digit sequence whose last digit is odd for men and even for women, and an ISO 7064
MOD 11-2 check character (``X`` stands for 10).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcrm.synthetic.geography import CITIES, STREETS

__all__ = [
    "Addresses",
    "Names",
    "draw_addresses",
    "draw_emails",
    "draw_mobiles",
    "draw_names",
    "format_emails",
    "format_mobiles",
    "is_valid_resident_id",
    "resident_id_check",
    "resident_ids",
]


def _entries(spec: str) -> tuple[tuple[str, ...], ...]:
    """Parse ``"a:b c:d"`` into ``(("a", "b"), ("c", "d"))``."""
    return tuple(tuple(item.split(":")) for item in spec.split())


#: Common surnames: character, pinyin, share of the population in percent.
_SURNAMES = _entries(
    "王:wang:7.1 李:li:7.0 张:zhang:6.7 刘:liu:5.4 陈:chen:4.5 杨:yang:3.1 "
    "黄:huang:2.2 赵:zhao:2.0 吴:wu:2.0 周:zhou:1.9 徐:xu:1.5 孙:sun:1.4 马:ma:1.3 "
    "朱:zhu:1.3 胡:hu:1.2 郭:guo:1.1 何:he:1.0 林:lin:1.0 罗:luo:0.9 高:gao:0.9 "
    "郑:zheng:0.8 梁:liang:0.8 谢:xie:0.7 宋:song:0.7 唐:tang:0.6 许:xu:0.6 韩:han:0.6 "
    "冯:feng:0.6 邓:deng:0.6 曹:cao:0.5 彭:peng:0.5 曾:zeng:0.5 肖:xiao:0.5 田:tian:0.5 "
    "董:dong:0.5 潘:pan:0.4 袁:yuan:0.4 蔡:cai:0.4 蒋:jiang:0.4 余:yu:0.4 于:yu:0.4 "
    "杜:du:0.4 叶:ye:0.4 程:cheng:0.4 魏:wei:0.3 苏:su:0.3 吕:lv:0.3 丁:ding:0.3 "
    "任:ren:0.3 沈:shen:0.3 "
)
_GIVEN_F = _entries(
    "芳:fang 娜:na 敏:min 静:jing 丽:li 婷:ting 雪:xue 琳:lin 颖:ying 佳:jia "
    "欣:xin 怡:yi 萍:ping 玲:ling 燕:yan 慧:hui 洁:jie 倩:qian 璐:lu 晶:jing "
    "梦:meng 瑶:yao 雯:wen 悦:yue 诗:shi 涵:han 梓:zi 思:si 雨:yu 晓:xiao "
)
_GIVEN_M = _entries(
    "伟:wei 强:qiang 磊:lei 军:jun 洋:yang 勇:yong 杰:jie 涛:tao 明:ming 超:chao "
    "斌:bin 鹏:peng 辉:hui 刚:gang 浩:hao 宇:yu 俊:jun 博:bo 文:wen 建:jian "
    "华:hua 志:zhi 海:hai 峰:feng 鑫:xin 睿:rui 子:zi 轩:xuan 晨:chen 凯:kai "
)

#: Real mobile prefixes of China Mobile, China Unicom and China Telecom.
MOBILE_PREFIXES = np.array([
    134, 135, 136, 137, 138, 139, 147, 150, 151, 152, 157, 158, 159, 172, 178, 182, 183, 184,
    187, 188, 195, 198, 130, 131, 132, 145, 155, 156, 166, 175, 176, 185, 186, 196, 133, 149,
    153, 173, 177, 180, 181, 189, 190, 191, 193, 199,
], dtype=np.int64)  # fmt: skip

_DOMAINS = np.array(["163.com", "126.com", "sina.com", "gmail.com", "outlook.com", "foxmail.com",
                     "139.com", "icloud.com", "hotmail.com", "yeah.net"], dtype=object)  # fmt: skip
_DOMAIN_P = np.array([0.30, 0.12, 0.06, 0.10, 0.09, 0.09, 0.08, 0.07, 0.05, 0.04])
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_CHECK_CHARS = np.array(list("10X98765432"), dtype=object)


def _cat(*parts: np.ndarray | str) -> np.ndarray:
    """Element-wise string concatenation of arrays (and scalars) into an object array."""
    out = pd.Series([""] * _length(parts), dtype="str")
    for part in parts:
        out = out + (part if isinstance(part, str) else pd.Series(part, dtype="str"))
    return out.to_numpy(dtype=object)


def _length(parts: tuple[np.ndarray | str, ...]) -> int:
    return next(len(p) for p in parts if not isinstance(p, str))


def _redraw_duplicates(values: np.ndarray, redraw: Callable[[int], np.ndarray]) -> np.ndarray:
    """Replace later duplicates with ``redraw(count)`` until all values are distinct."""
    values = values.copy()
    for _ in range(100):
        dup = pd.Series(values).duplicated().to_numpy()
        if not dup.any():
            return values
        values[dup] = redraw(int(dup.sum()))
    raise RuntimeError("could not draw distinct values")  # pragma: no cover


@dataclass(frozen=True)
class Names:
    full: np.ndarray  # e.g. "张伟"
    surname_pinyin: np.ndarray
    given_pinyin: np.ndarray


def draw_names(female: np.ndarray, rng: np.random.Generator) -> Names:
    """A Chinese name per person: a common surname and a one- or two-character given name."""
    n = female.shape[0]
    weights = np.array([float(s[2]) for s in _SURNAMES])
    surname = rng.choice(len(_SURNAMES), size=n, p=weights / weights.sum())
    two = rng.random(n) < 0.6
    first_char, first_py = _given(female, rng)
    second_char, second_py = _given(female, rng)
    sur_chars = np.array([s[0] for s in _SURNAMES], dtype=object)[surname]
    sur_py = np.array([s[1] for s in _SURNAMES], dtype=object)[surname]
    return Names(
        full=_cat(sur_chars, first_char, np.where(two, second_char, "")),
        surname_pinyin=sur_py,
        given_pinyin=_cat(first_py, np.where(two, second_py, "")),
    )


def _given(female: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One given-name character (and its pinyin) per person from the gender's pool."""
    pick = rng.integers(0, len(_GIVEN_F), size=female.shape[0])
    chars = np.where(
        female, np.array([c for c, _ in _GIVEN_F])[pick], np.array([c for c, _ in _GIVEN_M])[pick]
    )
    pinyin = np.where(
        female, np.array([p for _, p in _GIVEN_F])[pick], np.array([p for _, p in _GIVEN_M])[pick]
    )
    return chars.astype(object), pinyin.astype(object)


def draw_mobiles(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct 11-digit mobile numbers (int64) with real carrier prefixes."""

    def draw(k: int) -> np.ndarray:
        return rng.choice(MOBILE_PREFIXES, size=k) * 100_000_000 + rng.integers(
            0, 100_000_000, size=k
        )

    return _redraw_duplicates(draw(n), draw)


def format_mobiles(numbers: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Mobiles as text in one of four styles, as different systems record them.

    0 ``13800138000``; 1 ``+86 138-0013-8000``; 2 ``138 0013 8000``; 3 ``+8613800138000``.
    """
    text = pd.Series(numbers.astype(str), dtype="str")
    a, b, c = text.str[:3], text.str[3:7], text.str[7:]
    styles = [text, "+86 " + a + "-" + b + "-" + c, a + " " + b + " " + c, "+86" + text]
    out = styles[0].to_numpy(dtype=object)
    for code in (1, 2, 3):
        mask = style == code
        out[mask] = styles[code].to_numpy(dtype=object)[mask]
    return out


def draw_emails(
    surname_pinyin: np.ndarray,
    given_pinyin: np.ndarray,
    birth_year: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Distinct lower-case e-mail addresses: pinyin-based, or a numeric QQ mailbox."""
    n = surname_pinyin.shape[0]
    style = rng.choice(4, size=n, p=[0.3, 0.2, 0.25, 0.25])
    year2 = (
        pd.Series(birth_year % 100, dtype="int64").astype("str").str.zfill(2).to_numpy(dtype=object)
    )
    digits = rng.integers(1, 1000, size=n).astype(str).astype(object)
    local = np.select(
        [style == 0, style == 1, style == 2],
        [_cat(surname_pinyin, given_pinyin, year2), _cat(given_pinyin, ".", surname_pinyin),
         _cat(surname_pinyin, "_", given_pinyin, digits)],
        default=rng.integers(10_000, 3_000_000_000, size=n).astype(str).astype(object),
    )  # fmt: skip
    domain = np.where(
        style == 3, "qq.com", _DOMAINS[rng.choice(len(_DOMAINS), size=n, p=_DOMAIN_P)]
    )
    emails = _cat(local, "@", domain)

    def redraw(k: int) -> np.ndarray:
        return _cat(rng.integers(100_000, 9_999_999_999, size=k).astype(str), "@qq.com")

    return _redraw_duplicates(emails, redraw)


def format_emails(emails: np.ndarray, style: np.ndarray) -> np.ndarray:
    """E-mails as recorded: 0 as given, 1 upper-case, 2 capitalised local part."""
    text = pd.Series(emails, dtype="str")
    out = text.to_numpy(dtype=object)
    upper = text.str.upper().to_numpy(dtype=object)
    capital = (text.str[:1].str.upper() + text.str[1:]).to_numpy(dtype=object)
    out[style == 1] = upper[style == 1]
    out[style == 2] = capital[style == 2]
    return out


def resident_id_check(body: np.ndarray) -> np.ndarray:
    """The MOD 11-2 check character of each 17-digit body (int64) as text (``X`` for 10)."""
    powers = 10 ** np.arange(16, -1, -1, dtype=np.int64)
    digits = (body[:, None] // powers[None, :]) % 10
    return _CHECK_CHARS[(digits * _ID_WEIGHTS).sum(axis=1) % 11]


def resident_ids(
    area_code: np.ndarray, birth: np.ndarray, male: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Distinct 18-character resident ID numbers matching area, birth date and gender."""
    ymd = pd.DatetimeIndex(birth.astype("datetime64[ns]"))
    birth_num = (ymd.year * 10_000 + ymd.month * 100 + ymd.day).to_numpy().astype(np.int64)
    prefix = area_code.astype(np.int64) * 10**11 + birth_num * 1000

    def sequence(k: int, is_male: np.ndarray) -> np.ndarray:
        return 2 * rng.integers(0, 500, size=k) + is_male.astype(np.int64)

    body = prefix + sequence(prefix.shape[0], male)
    for _ in range(100):
        dup = pd.Series(body).duplicated().to_numpy()
        if not dup.any():
            break
        body[dup] = prefix[dup] + sequence(int(dup.sum()), male[dup])
    return _cat(body.astype(str), resident_id_check(body))


def is_valid_resident_id(values: pd.Series) -> np.ndarray:
    """True where a value is 17 digits plus the right MOD 11-2 check character."""
    text = pd.Series(values, dtype="str").fillna("")
    shaped = text.str.fullmatch(r"\d{17}[\dX]").fillna(False).to_numpy(dtype=bool)
    body = (
        pd.to_numeric(text.str[:17].where(shaped, "0"), errors="coerce").fillna(0).astype(np.int64)
    )
    expected = resident_id_check(body.to_numpy())
    return shaped & (text.str[17].to_numpy(dtype=object) == expected)


@dataclass(frozen=True)
class Addresses:
    address: np.ndarray  # "上海市浦东新区张杨路123号5栋802室"
    city: np.ndarray  # "上海"
    postcode: np.ndarray  # "200120"
    area_code: np.ndarray  # int64, the district's code


def _table(rows: Sequence[Sequence[object]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten per-city lists: values, per-city offset and per-city count."""
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.array([v for r in rows for v in r], dtype=object), offset, counts


def draw_addresses(city: np.ndarray, rng: np.random.Generator) -> Addresses:
    """A street address in each person's city (an index into :data:`CITIES`)."""
    n = city.shape[0]
    districts, d_off, d_n = _table([list(c.districts) for c in CITIES])
    district = d_off[city] + (rng.random(n) * d_n[city]).astype(np.int64)
    streets, s_off, s_n = _table([list(c.streets) + list(STREETS) for c in CITIES])
    street = streets[s_off[city] + (rng.random(n) * s_n[city]).astype(np.int64)]
    number = rng.integers(1, 1200, size=n).astype(str)
    building = rng.integers(1, 30, size=n).astype(str)
    room = (rng.integers(1, 33, size=n) * 100 + rng.integers(1, 5, size=n)).astype(str)
    full_city = np.array([c.full_name for c in CITIES], dtype=object)[city]
    district_name = np.array([d.name for d in districts], dtype=object)[district]
    return Addresses(
        address=_cat(full_city, district_name, street, number, "号", building, "栋", room, "室"),
        city=np.array([c.name for c in CITIES], dtype=object)[city],
        postcode=np.array([d.postcode for d in districts], dtype=object)[district],
        area_code=np.array([d.area_code for d in districts], dtype=np.int64)[district],
    )
