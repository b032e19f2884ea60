from metabp._cli import main

raise SystemExit(main())
