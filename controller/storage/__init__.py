"""Station data on disk: file names of the original PyCam (parsed once, passed on as records), atomic writes, date
folders, the store's index of what it holds, free space."""
