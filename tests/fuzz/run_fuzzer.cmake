# Runs the fuzzer on a scratch copy of the stored inputs, so that libFuzzer's
# additions to its corpus never land in the source tree.
#   -DFUZZER=path -DWORK=dir -DRUNS=n -DINPUTS=tests/data/io (its corpus/ and malformed/)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)
foreach(dir ${INPUTS}/corpus ${INPUTS}/malformed)
    file(GLOB files ${dir}/*.safetensors)
    file(COPY ${files} DESTINATION ${WORK}/corpus)
endforeach()
execute_process(COMMAND ${FUZZER} -runs=${RUNS} -max_len=4096 -seed=1 -artifact_prefix=${WORK}/ ${WORK}/corpus
                WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
if(rc)
    message(FATAL_ERROR "the fuzzer found a failing input (exit ${rc}); see ${WORK}")
endif()
