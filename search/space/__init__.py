"""The space: a YAML grid read strictly (`spacefile`), checked (`spacecheck`) and validated into a `GridSpec`
(`parse`), its points (`grid`), names that become paths (`names`), and the balanced design a budget chooses over it
(`design`)."""
