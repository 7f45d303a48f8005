"""The fleet: several processes sharing one store split its instances between them.

Instances hash to partitions (:mod:`._partitions`, fixed per store); a process runs the
partitions whose leases it holds and renews (:mod:`._leases`), and takes over those
whose leases lapse.
"""
