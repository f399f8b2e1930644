# Source this: the Open MPI settings these machines need (ENVIRONMENT.md): running as root, more ranks than
# cores, shared-memory transport only (skips slow UCX probing on a single machine), and no binding of ranks to
# cores: Open MPI binds the ranks of `mpirun -n 1` / `-n 2` to core 0 / cores 0-1, the same cores for every mpirun,
# so two runs side by side would share one core (jobs/spry-sweep run-local unbinds its points the same way).
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1
: "${OMPI_MCA_pml:=ob1}" "${OMPI_MCA_btl:=self,vader}" "${OMPI_MCA_hwloc_base_binding_policy:=none}"
export OMPI_MCA_pml OMPI_MCA_btl OMPI_MCA_hwloc_base_binding_policy
