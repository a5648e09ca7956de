"""python -m digestmail"""

from .cli import main

main()
