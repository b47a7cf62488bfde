"""The projections of :mod:`fenchel_idl.problem.projection`, under their former drivers path.

They moved to the problem layer, where the first-order blocks can reach them; this module
keeps ``fenchel_idl.drivers.projection`` importable until every import names the new place.
"""

from fenchel_idl.problem.projection import (
    PROJECTION_METHODS,
    project_inf_ball,
    project_l1_rows,
    project_well_posed,
    well_posed_radii,
)

__all__ = ["PROJECTION_METHODS", "project_inf_ball", "project_l1_rows", "project_well_posed",
           "well_posed_radii"]
