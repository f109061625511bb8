"""What the Streamlit dashboard's process needs from the package (its pages are dashboard.py and pages/).

login   the login gate: the throttle, and the signed, expiring tokens that keep a browser logged in
run     the ``vastops dashboard`` command: Streamlit with safe flags, on the shipped copy of the pages
"""
