# Runs a fuzzer on a scratch copy of the stored inputs, so that libFuzzer's
# additions to its corpus never land in the source tree.
#   -DFUZZER=path -DWORK=dir -DRUNS=n -DINPUTS=dir -DPATTERN=glob (relative to INPUTS) -DMAX_LEN=bytes
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)
file(GLOB files ${INPUTS}/${PATTERN})
file(COPY ${files} DESTINATION ${WORK}/corpus)
execute_process(COMMAND ${FUZZER} -runs=${RUNS} -max_len=${MAX_LEN} -seed=1 -artifact_prefix=${WORK}/ ${WORK}/corpus
                WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
if(rc)
    message(FATAL_ERROR "the fuzzer found a failing input (exit ${rc}); see ${WORK}")
endif()
