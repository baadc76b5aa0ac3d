"""CMU-MOSI standard folds (video ids per split, as in the CMU-MultimodalSDK): 52 / 10 / 31 videos.

Used by the ``.csd`` reader when no ``mosi_segments.csv`` is next to the data to give the video → split map.
"""

MOSI_TRAIN = (
    '03bSnISJMiM', '0h-zjBukYpk', '1DmNV9C1hbY', '1iG0909rllw', '2WGyTLYerpo', '2iD-tVS8NPw', '5W7Z1C_fDaE',
    '6Egk_28TtTM', '6_0THN4chvY', '73jzhE8R1TQ', '7JsX8y1ysxY', '8OtFthrtaJM', '8d-gEyoeBzc', '8qrpnFRGt2A',
    '9J25DZhivz8', '9T9Hf74oK10', '9c67fiY0wGQ', '9qR7uwkblbs', 'Af8D0E4ZXaw', 'BI97DNYfe5I', 'BXuRRbG0Ugk',
    'Bfr499ggo-0', 'BioHAh1qJAQ', 'BvYR0L6f2Ig', 'Ci-AH39fi3Y', 'Clx4VXItLTE', 'Dg_0XKD0Mf4', 'G-xst2euQUc',
    'G6GlGvlkxAQ', 'GWuJjcEuzt8', 'HEsqda8_d0Q', 'I5y0__X72p0', 'Iu2PFX3z_1s', 'IumbAb8q2dM', 'Jkswaaud0hk',
    'LSi-o-IrDMs', 'MLal-t_vJPM', 'Njd1F0vZSm4', 'Nzq88NnDkEk', 'OQvJTdtJ2H4', 'OtBXNcAL_lE', 'Oz06ZWiO20M',
    'POKffnXeBds', 'PZ-lDQFboO8', 'QN9ZIUWUXsY', 'Qr1Ca94K55A', 'Sqr0AcuoNnk', 'TvyZBvOMOTc', 'VCslbP0mgZI',
    'VbQk4H8hgr0', 'Vj1wYRQjB-o', 'W8NXH0Djyww',
)

MOSI_VALID = (
    'WKA5OygbEKI', 'X3j2zQgwYgE', 'ZAIRrfG22O0', 'ZUXBRvtny7o', '_dI--eQ6qVU', 'aiEXnCPZubE', 'atnd_PF-Lbs',
    'bOL9jKpeJRs', 'bvLlb-M3UXU', 'c5xsKMxpXnc',
)

MOSI_TEST = (
    'c7UH_rxdZv4', 'cM3Yna7AavY', 'cW1FSBF59ik', 'cXypl4FnoZo', 'd3_k5Xpfmik', 'd6hH302o4v8', 'dq3Nf_lMPnE',
    'etzxEpPuc6I', 'f9O3YtZ2VfI', 'f_pcplsH_V0', 'fvVhgmXxadc', 'iiK8YX8oH1E', 'jUzDDGyPkXU', 'k5Y_838nuGo',
    'lXPQBPVc5Cw', 'nbWiPyCm4g0', 'nzpVDcQ0ywM', 'ob23OKe5a9Q', 'pLTX3ipuDJI', 'phBUpBr1hSo', 'rnaNMUZpvvg',
    'tIrG4oNLFzE', 'tStelxIAHjw', 'tmZoasNr4rU', 'v0zCBqDeKcE', 'vvZ4IcEtiZc', 'vyB00TXsimI', 'wMbj6ajWbic',
    'yDtzw_Y-7RU', 'yvsjCA6Y5Fc', 'zhpQhgha_KU',
)

MOSI_FOLDS = {**{v: "train" for v in MOSI_TRAIN}, **{v: "valid" for v in MOSI_VALID}, **{v: "test" for v in MOSI_TEST}}
