"""Child supervision: forking sandbox children (`zygote`, `children`), running one job in one from
outside the guest (`supervisor`), and deciding when a child may run another job (`child_reuse`)."""
