"""Running a study: the driver (`driver`) asks the scheduler (`scheduler`) what can start, the executors (`dispatch`)
run each job in a worker (`worker`); a killed run's leftovers (`leftovers`) and the Ray cluster's token (`rayauth`)."""
