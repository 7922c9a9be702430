"""The statistics: pure functions of numbers and tables, below both `search` (which plans designs and decides
when a design has learnt enough) and `results` (which reports). `stats`: paired tests, corrections, power;
`coding`: a design's model matrices and expected precision; `gains`: the paired gain over the matched baseline;
`effects`: the effects model's fit, its named axes, its predicted best and its precision."""
