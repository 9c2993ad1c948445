"""Generalisers: pure, vectorised functions that coarsen quasi-identifiers.

Each generaliser maps a column to a coarser one (birth date → age band, city → region,
postcode → 3-digit prefix, timestamp → month start, gender → F/M/U). They are registered by
name in :data:`GENERALISERS`, which is what a :class:`~fedcrm.privacy.policy.ColumnRule`
names; an unknown name raises :class:`ValueError` listing the valid ones.

Limits: generalisation lowers the chance that a combination of attributes singles a customer
out; it does not make a small group safe (a 65+ customer in a rare region stays rare). Small-cell
rules and differential privacy downstream address that; this module does not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd

__all__ = [
    "AGE_BANDS",
    "GENERALISERS",
    "REGIONS",
    "Generaliser",
    "age_band",
    "age_band_label",
    "gender",
    "get_generaliser",
    "month_start",
    "postcode_prefix",
    "region",
]

AGE_BANDS: tuple[str, ...] = ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_AGE_EDGES = np.array([18, 25, 35, 45, 55, 65])

REGIONS: tuple[str, ...] = (
    *("north_china", "northeast", "east_china", "central_china"),
    *("south_china", "southwest", "northwest", "other"),
)

# Provinces (and province-level cities) first, then major cities. Entries are separated by
# ";", each "汉字 pinyin [alias...]"; names whose pinyin is shared by cities of different regions
# (宜春/伊春 yichun, 玉林/榆林 yulin) are listed in characters only.
_REGION_TABLE: dict[str, str] = {
    "north_china": """
        华北 huabei; 北京 beijing peking; 天津 tianjin; 河北 hebei; 山西 shanxi;
        内蒙古 neimenggu innermongolia; 石家庄 shijiazhuang; 唐山 tangshan; 保定 baoding;
        秦皇岛 qinhuangdao; 邯郸 handan; 廊坊 langfang; 沧州 cangzhou; 张家口 zhangjiakou;
        承德 chengde; 邢台 xingtai; 衡水 hengshui; 太原 taiyuan; 大同 datong; 长治 changzhi;
        运城 yuncheng; 临汾 linfen; 呼和浩特 huhehaote hohhot; 包头 baotou;
        鄂尔多斯 eerduosi ordos; 赤峰 chifeng
    """,
    "northeast": """
        东北 dongbei; 辽宁 liaoning; 吉林 jilin; 黑龙江 heilongjiang; 沈阳 shenyang; 大连 dalian;
        鞍山 anshan; 抚顺 fushun; 丹东 dandong; 锦州 jinzhou; 营口 yingkou; 长春 changchun;
        哈尔滨 haerbin harbin; 齐齐哈尔 qiqihaer; 大庆 daqing; 牡丹江 mudanjiang; 佳木斯 jiamusi;
        伊春; 延吉 yanji
    """,
    "east_china": """
        华东 huadong; 上海 shanghai; 江苏 jiangsu; 浙江 zhejiang; 安徽 anhui; 福建 fujian;
        江西 jiangxi; 山东 shandong; 台湾 taiwan; 南京 nanjing; 苏州 suzhou; 无锡 wuxi;
        常州 changzhou; 南通 nantong; 扬州 yangzhou; 徐州 xuzhou; 镇江 zhenjiang; 泰州 taizhou;
        盐城 yancheng; 淮安 huaian; 连云港 lianyungang; 宿迁 suqian; 杭州 hangzhou; 宁波 ningbo;
        温州 wenzhou; 绍兴 shaoxing; 嘉兴 jiaxing; 湖州 huzhou; 金华 jinhua; 台州 taizhou;
        义乌 yiwu; 舟山 zhoushan; 丽水 lishui; 衢州 quzhou; 合肥 hefei; 芜湖 wuhu; 蚌埠 bengbu;
        安庆 anqing; 马鞍山 maanshan; 阜阳 fuyang; 宿州 suzhou; 福州 fuzhou; 厦门 xiamen amoy;
        泉州 quanzhou; 漳州 zhangzhou; 莆田 putian; 南昌 nanchang; 赣州 ganzhou; 九江 jiujiang;
        景德镇 jingdezhen; 抚州 fuzhou; 宜春; 济南 jinan; 青岛 qingdao; 烟台 yantai; 潍坊 weifang;
        临沂 linyi; 淄博 zibo; 济宁 jining; 威海 weihai; 日照 rizhao; 泰安 taian;
        台北 taibei taipei
    """,
    "central_china": """
        华中 huazhong; 河南 henan; 湖北 hubei; 湖南 hunan; 郑州 zhengzhou; 洛阳 luoyang;
        开封 kaifeng; 新乡 xinxiang; 南阳 nanyang; 许昌 xuchang; 武汉 wuhan; 宜昌 yichang;
        襄阳 xiangyang; 荆州 jingzhou; 十堰 shiyan; 长沙 changsha; 株洲 zhuzhou; 湘潭 xiangtan;
        衡阳 hengyang; 岳阳 yueyang; 常德 changde
    """,
    "south_china": """
        华南 huanan; 广东 guangdong; 广西 guangxi; 海南 hainan; 香港 xianggang hongkong;
        澳门 aomen macau macao; 广州 guangzhou canton; 深圳 shenzhen; 东莞 dongguan; 佛山 foshan;
        珠海 zhuhai; 中山 zhongshan; 惠州 huizhou; 汕头 shantou; 江门 jiangmen; 湛江 zhanjiang;
        肇庆 zhaoqing; 茂名 maoming; 南宁 nanning; 柳州 liuzhou; 桂林 guilin; 北海 beihai; 玉林;
        海口 haikou; 三亚 sanya
    """,
    "southwest": """
        西南 xinan; 重庆 chongqing; 四川 sichuan; 贵州 guizhou; 云南 yunnan; 西藏 xizang tibet;
        成都 chengdu; 绵阳 mianyang; 宜宾 yibin; 南充 nanchong; 泸州 luzhou; 德阳 deyang;
        乐山 leshan; 贵阳 guiyang; 遵义 zunyi; 昆明 kunming; 大理 dali; 丽江 lijiang; 曲靖 qujing;
        拉萨 lasa lhasa
    """,
    "northwest": """
        西北 xibei; 陕西 shaanxi; 甘肃 gansu; 青海 qinghai; 宁夏 ningxia; 新疆 xinjiang; 西安 xian;
        咸阳 xianyang; 宝鸡 baoji; 榆林; 延安 yanan; 兰州 lanzhou; 天水 tianshui; 西宁 xining;
        银川 yinchuan; 乌鲁木齐 wulumuqi urumqi; 喀什 kashi kashgar; 克拉玛依 kelamayi
    """,
}

_CJK = re.compile(r"[\u4e00-\u9fff]")
_CJK_SUFFIX = re.compile(r"(特别行政区|壮族自治区|回族自治区|维吾尔自治区|自治区|省|市|地区)$")
_LATIN_NOISE = re.compile(r"[\s'’`\-_.]+")
_LATIN_SUFFIX = re.compile(r"(city|province)$")


def _normalise_place(value: str) -> str:
    v = value.strip()
    if _CJK.search(v):
        return _CJK_SUFFIX.sub("", re.sub(r"\s+", "", v))
    return _LATIN_SUFFIX.sub("", _LATIN_NOISE.sub("", v.lower()))


def _build_lookup() -> dict[str, str]:
    lookup: dict[str, str] = {_normalise_place(code): code for code in REGIONS}
    for reg, entries in _REGION_TABLE.items():
        for entry in entries.split(";"):
            for name in entry.split():
                key = _normalise_place(name)
                if lookup.setdefault(key, reg) != reg:
                    raise ValueError(f"place {name!r} maps to two regions")
    return lookup


_PLACE_TO_REGION: Mapping[str, str] = MappingProxyType(_build_lookup())
_CJK_KEYS = sorted((k for k in _PLACE_TO_REGION if _CJK.match(k)), key=len, reverse=True)


def _region_of(value: str) -> str:
    key = _normalise_place(value)
    found = _PLACE_TO_REGION.get(key)
    if found is None and _CJK.match(key):  # "广东省深圳市南山区": longest known prefix
        found = next((_PLACE_TO_REGION[k] for k in _CJK_KEYS if key.startswith(k)), None)
    return found or "other"


def _as_datetime(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if getattr(values.dt, "tz", None) is not None:
            return values.dt.tz_localize(None)
        return values
    return pd.to_datetime(values, errors="coerce", format="ISO8601")


def age_band(birth: pd.Series, reference: pd.Timestamp) -> pd.Series:
    """Age in completed years at ``reference``, as a band of :data:`AGE_BANDS`.

    Missing dates and births after ``reference`` give a missing band. A 29 February birthday
    counts as reached on 1 March in common years.
    """
    b = _as_datetime(birth)
    ref = pd.Timestamp(reference)
    year = b.dt.year.to_numpy("float64", na_value=np.nan)
    month = b.dt.month.to_numpy("float64", na_value=np.nan)
    day = b.dt.day.to_numpy("float64", na_value=np.nan)
    before_birthday = (month > ref.month) | ((month == ref.month) & (day > ref.day))
    age = ref.year - year - before_birthday
    valid = ~np.isnan(age) & (age >= 0)
    idx = np.searchsorted(_AGE_EDGES, np.where(valid, age, 0), side="right")
    labels = np.array((*AGE_BANDS, None), dtype=object)[np.where(valid, idx, len(AGE_BANDS))]
    return pd.Series(labels, index=birth.index, dtype="str")


def age_band_label(values: pd.Series, reference: pd.Timestamp | None = None) -> pd.Series:
    """An existing age band: labels of :data:`AGE_BANDS` pass, anything else becomes missing."""
    s = values.astype("str").str.strip()
    return s.where(s.isin(AGE_BANDS)).astype("str")


def region(city: pd.Series, reference: pd.Timestamp | None = None) -> pd.Series:
    """City or province (汉字 with or without 市/省, or pinyin) → one of :data:`REGIONS`.

    Region codes and Chinese region names (华东...) map to themselves; unknown places map to
    ``"other"``; missing stays missing.
    """
    s = city.astype("str")
    uniques = s.dropna().unique()
    table = {u: _region_of(u) for u in uniques}
    return s.map(table).astype("str")


def postcode_prefix(postcode: pd.Series, reference: pd.Timestamp | None = None) -> pd.Series:
    """The first 3 digits of a postal code; codes not starting with 3 digits become missing."""
    s = postcode.astype("str").str.strip()
    return s.str.extract(r"^(\d{3})", expand=False).astype("str")


def month_start(values: pd.Series, reference: pd.Timestamp | None = None) -> pd.Series:
    """Timestamps truncated to midnight on the first day of their month (dtype kept)."""
    ts = _as_datetime(values)
    arr = ts.to_numpy()
    return pd.Series(arr.astype("datetime64[M]").astype(arr.dtype), index=values.index)


_GENDER = {
    **dict.fromkeys(("f", "female", "woman", "w", "女", "女性"), "F"),
    **dict.fromkeys(("m", "male", "man", "男", "男性"), "M"),
}


def gender(values: pd.Series, reference: pd.Timestamp | None = None) -> pd.Series:
    """Gender as ``F``, ``M`` or ``U`` (unknown, other, missing)."""
    s = values.astype("str").str.strip().str.lower()
    return s.map(_GENDER).fillna("U").astype("str")


GeneraliserFn = Callable[[pd.Series, pd.Timestamp], pd.Series]


@dataclass(frozen=True)
class Generaliser:
    """A named generaliser; ``fallback`` is the value it gives inputs it cannot place."""

    name: str
    func: GeneraliserFn
    description: str
    fallback: str | None = None

    def __call__(self, values: pd.Series, reference: pd.Timestamp) -> pd.Series:
        return self.func(values, reference)

    def unmapped(self, values: pd.Series, output: pd.Series) -> int:
        """How many present inputs came out missing or as the fallback value."""
        lost = output.isna() if self.fallback is None else output.isna() | (output == self.fallback)
        return int((values.notna().to_numpy() & lost.to_numpy(dtype=bool)).sum())


GENERALISERS: Mapping[str, Generaliser] = MappingProxyType(
    {
        g.name: g
        for g in (
            Generaliser("age_band", age_band, "birth date → age band at the reference time"),
            Generaliser("age_band_label", age_band_label, "existing age band, checked"),
            Generaliser("region", region, "city/province → region", fallback="other"),
            Generaliser("postcode_prefix", postcode_prefix, "postcode → first 3 digits"),
            Generaliser("month", month_start, "timestamp → first day of its month"),
            Generaliser("gender", gender, "gender → F/M/U", fallback="U"),
        )
    }
)


def get_generaliser(name: str) -> Generaliser:
    """The registered generaliser called ``name``; ValueError lists the valid names."""
    try:
        return GENERALISERS[name]
    except KeyError:
        valid = ", ".join(sorted(GENERALISERS))
        raise ValueError(f"unknown generaliser {name!r}; valid: {valid}") from None
