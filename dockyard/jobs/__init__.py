"""Background work: one scheduler, jobs of one kind, coordinated across nodes through leases."""
