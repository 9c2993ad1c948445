"""Cities, districts and streets: where customers live and stores stand.

Each district carries its real 6-digit administrative code (the first six digits of a
resident ID registered there) and a postcode of its city's range, so an address, its
postcode and the ID's area code agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CITIES", "STREETS", "City", "District", "city_by_slug", "city_weights"]


@dataclass(frozen=True)
class District:
    name: str
    area_code: int  # GB/T 2260 code, first six digits of a resident ID
    postcode: str


@dataclass(frozen=True)
class City:
    name: str  # as written in the city column, e.g. "上海"
    full_name: str  # as written in addresses, e.g. "上海市"
    slug: str  # ascii, for store ids
    weight: float  # share of customers of national (online) stores
    districts: tuple[District, ...]
    streets: tuple[str, ...]  # local street names, used besides the common STREETS


def _city(
    name: str, full_name: str, slug: str, weight: float, districts: str, streets: str
) -> City:
    """A city from ``"district code postcode, ..."`` and space-separated street names."""
    parsed = []
    for entry in districts.split(","):
        district, code, postcode = entry.split()
        parsed.append(District(district, int(code), postcode))
    return City(name, full_name, slug, weight, tuple(parsed), tuple(streets.split()))


CITIES: tuple[City, ...] = (
    _city("上海", "上海市", "shanghai", 0.14,
          "浦东新区 310115 200120, 徐汇区 310104 200030, 静安区 310106 200040, "
          "黄浦区 310101 200001, 闵行区 310112 201100, 长宁区 310105 200050",
          "张杨路 世纪大道 淮海中路 南京西路 漕溪北路 虹桥路"),
    _city("北京", "北京市", "beijing", 0.13,
          "朝阳区 110105 100020, 海淀区 110108 100080, 东城区 110101 100010, "
          "西城区 110102 100032, 丰台区 110106 100071",
          "建国路 中关村大街 王府井大街 西单北大街 三里屯路"),
    _city("广州", "广州市", "guangzhou", 0.10,
          "天河区 440106 510620, 越秀区 440104 510030, 海珠区 440105 510220, "
          "白云区 440111 510405",
          "天河路 体育西路 北京路 江南大道"),
    _city("深圳", "深圳市", "shenzhen", 0.10,
          "南山区 440305 518052, 福田区 440304 518033, 宝安区 440306 518101, "
          "罗湖区 440303 518001",
          "深南大道 科技园路 华强北路 宝安大道"),
    _city("杭州", "杭州市", "hangzhou", 0.08,
          "西湖区 330106 310012, 滨江区 330108 310051, 拱墅区 330105 310011, "
          "上城区 330102 310002",
          "文三路 江南大道 延安路 莫干山路"),
    _city("成都", "成都市", "chengdu", 0.09,
          "锦江区 510104 610021, 武侯区 510107 610041, 青羊区 510105 610031, "
          "成华区 510108 610051",
          "春熙路 人民南路 蜀都大道 建设路"),
    _city("武汉", "武汉市", "wuhan", 0.07,
          "武昌区 420106 430061, 洪山区 420111 430070, 江岸区 420102 430014",
          "中南路 珞喻路 解放大道"),
    _city("南京", "南京市", "nanjing", 0.07,
          "玄武区 320102 210018, 鼓楼区 320106 210008, 秦淮区 320104 210001",
          "中山路 北京东路 汉中路"),
    _city("西安", "西安市", "xian", 0.06,
          "雁塔区 610113 710061, 碑林区 610103 710001, 莲湖区 610104 710003",
          "长安路 小寨路 北大街"),
    _city("重庆", "重庆市", "chongqing", 0.07,
          "渝中区 500103 400010, 江北区 500105 400020, 南岸区 500108 400060",
          "解放碑步行街 观音桥步行街 南坪正街"),
    _city("天津", "天津市", "tianjin", 0.05,
          "和平区 120101 300041, 河西区 120103 300202, 南开区 120104 300100",
          "南京路 友谊路 卫津路"),
    _city("苏州", "苏州市", "suzhou", 0.04,
          "姑苏区 320508 215006, 吴中区 320506 215104, 虎丘区 320505 215011",
          "人民路 干将路 东吴北路"),
)  # fmt: skip

#: Street names found in every Chinese city.
STREETS: tuple[str, ...] = (
    "人民路", "中山路", "解放路", "建设路", "和平路", "长江路", "新华路", "文化路",
    "胜利路", "青年路", "光明路", "幸福路", "东风路", "友谊路", "朝阳路", "环城路",
)  # fmt: skip


def city_by_slug(slug: str) -> City:
    """The city with ascii name ``slug``; ValueError listing the valid ones otherwise."""
    for city in CITIES:
        if city.slug == slug:
            return city
    raise ValueError(f"unknown city {slug!r}; valid: {', '.join(c.slug for c in CITIES)}")


def city_weights() -> np.ndarray:
    """Population weights of :data:`CITIES`, summing to one."""
    weights = np.array([c.weight for c in CITIES])
    return weights / weights.sum()
