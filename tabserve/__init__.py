"""tabserve: runtime library shared by training, service and UI."""
