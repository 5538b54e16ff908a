"""Station data on disk: file names of the original PyCam, atomic writes, date folders, free space."""
