"""Scale-out on Ray (optional extra ``ppd[ray]``): embedding a data root and ``ppd eval`` rows.

The same code as the serial paths runs inside Ray actors; each actor loads SAM (and the
agents) once and pins its torch thread count. Without Ray installed nothing here is imported.
See docs/SCALE.md for clusters.
"""
