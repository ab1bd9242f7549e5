"""trustspace's model-release entry point (`trustspace.federated.disclosure.PREDICT_ENTRY`):
the sandbox runs this file with the app's folder on its path; the code is in
`logreg_app.predict`."""

import runpy

# By name: inside the sandbox the app's folder is on sys.path; as part of the trustspace
# package it is not, so a static import would not resolve there.
runpy.run_module("logreg_app.predict", run_name="__main__")
