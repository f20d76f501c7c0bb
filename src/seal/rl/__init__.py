"""The outer loop: ReST-EM over any domain of the `seal.domains` contract (`rest_em`), run in
process or on a Ray cluster (`ray_executor`)."""
