from fastnoise.cli import main

raise SystemExit(main())
