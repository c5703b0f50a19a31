"""Pure protocol logic: no I/O, no framework, nothing from the other healthid packages."""
