# Runs at boot on a board: load the model, open the IMU from config.json, restore the
# trained weights (app.py). Then the REPL: app.collect("PEN", n=20); app.train(); app.save().
import app

try:
    app.boot()
except Exception as e:  # keep the REPL usable (e.g. no model.etm deployed yet)
    print("edgetune app: boot failed:", e)
