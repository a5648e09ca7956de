"""python -m digestmail"""

from .cli import main

if __name__ == "__main__":  # not when a build process (spawn) imports it
    main()
