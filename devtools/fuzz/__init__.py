"""The checkpoint fuzzer: mutate a real checkpoint as an attacker would, prove every reader safe.

    python -m devtools.fuzz --cases 300

A tiny real training run makes a checkpoint once per session; each case
mutates a fresh copy of it (manifest, trainer state, config, HDF5 files,
pointers, the file system), re-hashes the manifest as anyone who can write the
directory can, then runs every reader of the project on it: the format and
reading functions, ``python -m trainer list|verify|inspect`` in-process, and
the resume path of ``train.py +resume=`` (TensorFlow, in-process). The oracle
(``devtools.fuzz.oracle``) asks of every case: no traceback, nothing executed,
no file changed, and a clear refusal or a correct result.

=================  ==============================================================
module             what it holds
=================  ==============================================================
``source``         the source run, a case's copy, snapshots, the re-hash
``canary``         the tripwires that fire if checkpoint content is executed
``mutations``      the protocol of a mutation: apply, phase, expectation
``documents``      JSON and YAML mutations: structure, types, values, payloads, bytes
``files``          symlinks, FIFOs, directories, large files; pointers; the run dir
``h5``             HDF5 mutations (links, external storage, dtypes, shapes, bytes)
``strategies``     hypothesis strategies: the cases, one strategy per kind of file
``oracle``         running a reader under a time limit; judging what it did
``readers``        the TensorFlow-free readers and commands, as the oracle runs them
``resume``         the resume path in-process, and what a correct resume restores
``session``        a fuzz session: copy, mutate, re-hash, read, judge; the tally
``__main__``       the command: N cases, the failure classes, the one-line figure
=================  ==============================================================

Importing this package, or any module of it but ``resume``'s functions,
imports no TensorFlow. Needs ``hypothesis`` (the ``dev`` extra).
"""
