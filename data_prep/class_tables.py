"""The class lists of the folder datasets, {subcommand: class names}: one leaf module, so `data_prep.folders` can
tell a tree of one dataset given to another converter (`check_dataset_matches`) without importing the converters."""

from __future__ import annotations

UCM = (
    "agricultural",
    "airplane",
    "baseballdiamond",
    "beach",
    "buildings",
    "chaparral",
    "denseresidential",
    "forest",
    "freeway",
    "golfcourse",
    "harbor",
    "intersection",
    "mediumresidential",
    "mobilehomepark",
    "overpass",
    "parkinglot",
    "river",
    "runway",
    "sparseresidential",
    "storagetanks",
    "tenniscourt",
)

AID = tuple(
    """Airport BareLand BaseballField Beach Bridge Center Church Commercial DenseResidential Desert Farmland Forest
    Industrial Meadow MediumResidential Mountain Park Parking Playground Pond Port RailwayStation Resort River School
    SparseResidential Square Stadium StorageTanks Viaduct""".split()
)

WHU_RS19 = tuple(
    sorted(
        """Airport Beach Bridge Commercial Desert Farmland footballField Forest Industrial Meadow Mountain Park Parking
        Pond Port railwayStation Residential River Viaduct""".split()
    )
)

PATTERNNET = tuple(
    """airplane baseball_field basketball_court beach bridge cemetery chaparral christmas_tree_farm closed_road
    coastal_mansion crosswalk dense_residential ferry_terminal football_field forest freeway golf_course harbor
    intersection mobile_home_park nursing_home oil_gas_field oil_well overpass parking_lot parking_space railway river
    runway runway_marking shipping_yard solar_panel sparse_residential storage_tank swimming_pool tennis_court
    transformer_station wastewater_treatment_plant""".split()
)

RESISC45 = tuple(
    """airplane airport baseball_diamond basketball_court beach bridge chaparral church circular_farmland cloud
    commercial_area dense_residential desert forest freeway golf_course ground_track_field harbor industrial_area
    intersection island lake meadow medium_residential mobile_home_park mountain overpass palace parking_lot railway
    railway_station rectangular_farmland river roundabout runway sea_ice ship snowberg sparse_residential stadium
    storage_tank tennis_court terrace thermal_power_station wetland""".split()
)

CLASS_TABLES: dict[str, tuple[str, ...]] = {
    "ucm": UCM,
    "aid": AID,
    "whu_rs19": WHU_RS19,
    "patternnet": PATTERNNET,
    "resisc45": RESISC45,
}
