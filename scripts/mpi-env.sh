# Sourced by the scripts that call mpirun: OpenMPI refuses root unless told, and this
# machine has fewer cores than the ranks we start, so oversubscribe and keep one thread a rank.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# A failed job ends with moe's one error line, without Open MPI's banners (MPI_Abort's, a
# rank's non-zero exit): what mpirun -q does.
export OMPI_MCA_orte_execute_quiet=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
