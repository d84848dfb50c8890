"""The deployment: every build decision for one candidate, made once, read by both engines.

`model` holds the typed values (`Deployment` and its parts); `build` turns a spec and a chosen
candidate into one, asking `servestack.clouds` for each cloud's facts. Nothing here imports an
engine or a cloud SDK.
"""
