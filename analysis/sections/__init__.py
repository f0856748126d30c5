"""One report section per store table, found through the task registry (see analysis/report.py).

A table T gets a section of its own with a module `survey.analysis.sections.T` defining `SECTION`, an
instance of `survey.analysis.sections.base.Section` (or a subclass) with `table = "T"`: its title, method
text, parameter columns, default definitions of bad outcomes, and hooks for figures and worst cases.
Any other table the registry or the store names gets `generic.GenericSection`. Shared parts of the
report: base (blocks, formatting, estimates), study (provenance, truths, device, criteria), closing.
"""
