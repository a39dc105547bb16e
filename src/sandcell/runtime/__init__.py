"""Code that runs inside a sandbox. It never imports host-side sandcell code."""
