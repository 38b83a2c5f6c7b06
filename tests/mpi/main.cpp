// Catch2 under MPI: every rank runs every test case in the same order (the
// cases call collectives), and the process fails when any rank failed.

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <mpi.h>

int main(int argc, char** argv)
{
    MPI_Init(&argc, &argv);
    // Errors come back as codes, which xmerge::mpi turns into exceptions.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int failed = Catch::Session().run(argc, argv);
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
