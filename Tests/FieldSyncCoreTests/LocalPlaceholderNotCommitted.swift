// Local placeholder (not committed): the core tests live on main.
