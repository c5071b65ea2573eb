# ComfyUI's own import check, with the classes each custom node registered counted.
#
#   cd WORKSPACE/ComfyUI && IMPORTCHECK_OUT=classes.json WORKSPACE/venv/bin/python importcheck.py > log 2>&1
#
# Runs ComfyUI's main.py exactly as `python main.py --cpu --quick-test-for-ci` would (same argv, same
# __main__, same working directory): it loads every folder in custom_nodes/, prints "Import times for
# custom nodes" and exits 0. At exit, the classes in nodes.NODE_CLASS_MAPPINGS are counted by the
# module ComfyUI recorded for each (RELATIVE_PYTHON_MODULE, what GET /object_info reports as
# python_module: "custom_nodes.FOLDER" for a custom node) and written to IMPORTCHECK_OUT as JSON.
import atexit
import collections
import json
import os
import runpy
import sys

OUT = os.environ["IMPORTCHECK_OUT"]


def dump():
    try:
        nodes = sys.modules.get("nodes")
        if nodes is None:
            result = {"error": "ComfyUI's nodes module was never imported"}
        else:
            counts = collections.Counter(
                getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes") for cls in nodes.NODE_CLASS_MAPPINGS.values())
            result = {"classes": dict(counts)}
    except Exception as error:  # report, never hide the check's own outcome
        result = {"error": repr(error)}
    with open(OUT, "w") as file:
        json.dump(result, file, indent=1, sort_keys=True)


atexit.register(dump)
sys.argv = ["main.py", "--cpu", "--quick-test-for-ci"] + sys.argv[1:]
sys.path.insert(0, os.getcwd())
runpy.run_path("main.py", run_name="__main__")
